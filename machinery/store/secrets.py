"""The secrets collection: one document per secret, its value only as the encrypted token it is given."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from machinery.clock import utcnow
from machinery.store.errors import serialised

SECRETS = "secrets"
CACHE_SIZE = 1024


def _out(document: dict) -> dict:
    """A secret as the rest of the program sees it: its name and dates, never its token."""
    return {"name": document["name"],
            **{key: document[key].replace(tzinfo=UTC) for key in ("created_at", "updated_at") if key in document}}


class SecretStore:
    """Encrypted secret tokens by name, and which services' headers name a secret.

    A call reads its secrets' tokens each time, so a rotation takes effect at the next call. On
    MongoDB that is one read by the unique `name` index. The embedded store is written by this
    process alone, so its tokens are kept in memory too, and every write here drops the copy.
    """

    def __init__(self, database, guard, *, embedded: bool = False):
        self.collection = database[SECRETS]
        self.services = database["services"]
        self._guard = guard
        self.embedded = embedded
        self._tokens: dict[str, str | None] = {}
        self._indexed = False

    def _index(self) -> None:
        if not self._indexed:
            self.collection.create_index("name", unique=True)
            self._indexed = True

    @serialised
    def token(self, name: str) -> str | None:
        """The encrypted token of a stored secret, or None when none of that name is stored."""
        if self.embedded:
            try:
                return self._tokens[name]
            except KeyError:
                pass
        self._index()
        document = self.collection.find_one({"name": name}, {"token": 1, "_id": 0})
        token = document["token"] if document else None
        if self.embedded:
            if len(self._tokens) >= CACHE_SIZE:
                self._tokens.clear()
            self._tokens[name] = token
        return token

    @serialised
    def put(self, name: str, token: str) -> tuple[dict, bool]:
        """Store a secret's token, replacing one of that name; returns (secret, created)."""
        self._index()
        now = utcnow()
        result = self.collection.update_one(
            {"name": name}, {"$set": {"token": token, "updated_at": now}, "$setOnInsert": {"created_at": now}},
            upsert=True)
        self._tokens.pop(name, None)
        document = self.collection.find_one({"name": name}, {"token": 0})
        return _out(document), result.upserted_id is not None

    @serialised
    def get(self, name: str) -> dict | None:
        self._index()
        document = self.collection.find_one({"name": name}, {"token": 0})
        return _out(document) if document else None

    @serialised
    def list(self) -> list[dict]:
        return [_out(document) for document in self.collection.find({}, {"token": 0}).sort("name", 1)]

    @serialised
    def tokens(self) -> list[tuple[str, str]]:
        """Every stored (name, token): what a start-up check tries to decrypt."""
        return [(document["name"], document["token"])
                for document in self.collection.find({}, {"name": 1, "token": 1, "_id": 0})]

    @serialised
    def delete(self, name: str) -> bool:
        deleted = self.collection.delete_one({"name": name}).deleted_count > 0
        self._tokens.pop(name, None)
        return deleted

    @serialised
    def services_using(self, name: str) -> list[str]:
        """The services whose request headers name `{secret.<name>}`. Deleting a secret is rare, and
        services are few: read the header templates of those that have any, rather than index them."""
        needle = "{secret." + name + "}"
        used = []
        for document in self.services.find({"request.headers": {"$exists": True}},
                                           {"name": 1, "request.headers": 1, "_id": 0}):
            headers: Any = (document.get("request") or {}).get("headers") or {}
            if any(isinstance(value, str) and needle in value for value in headers.values()):
                used.append(document["name"])
        return sorted(used)
