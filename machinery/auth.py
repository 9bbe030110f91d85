"""Who may do what: API keys and their rights, and each workflow's own ingestion secrets (no Flask).

Keys come from MACHINERY_API_KEYS, `key:right[+right...]` entries separated by commas:

    MACHINERY_API_KEYS="k3y-for-ops-0123456789:admin,k3y-for-grafana-0123:read,k3y-for-ci-012345:send"

- `admin`: everything.
- `read`: GET (and HEAD) on the management API and the UI: services, workflows, events, graphs.
- `send`: POST /e/<workflow>, for every workflow.

Only SHA-256 digests of the keys are kept in memory after start-up, and a presented key is
compared against every one of them in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

RIGHTS = ("admin", "read", "send")
MIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 256
# RFC 6750's b64token: what may follow "Bearer " without quoting.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
SIGNATURE_PREFIX = "sha256="


def digest(secret: str) -> str:
    """The SHA-256 hex digest of a secret, as kept for API keys and ingestion tokens."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """One API key, known by its digest; `label` names it in logs without giving it away."""

    digest: str
    rights: frozenset[str]
    label: str

    def allows(self, right: str) -> bool:
        return "admin" in self.rights or right in self.rights


class KeyRing:
    """The configured API keys. Empty: authentication is off."""

    def __init__(self, keys: Iterable[ApiKey] = ()):
        self._keys = tuple(keys)

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """Read MACHINERY_API_KEYS. A ValueError names the entry at fault by position, never the key."""
        keys: list[ApiKey] = []
        seen: set[str] = set()
        for number, entry in enumerate((part.strip() for part in text.split(",")), start=1):
            if not entry:
                continue
            key, separator, rights_text = entry.rpartition(":")
            if not separator or not key:
                raise ValueError(f"entry {number} is not key:right (rights: {', '.join(RIGHTS)})")
            rights = frozenset(right.strip().lower() for right in rights_text.split("+"))
            unknown = sorted(rights - set(RIGHTS))
            if unknown:
                raise ValueError(f"entry {number} has unknown right {unknown[0]!r}; rights: {', '.join(RIGHTS)}")
            if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH:
                raise ValueError(f"the key of entry {number} must be {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} "
                                 "characters long")
            if not KEY_PATTERN.match(key):
                raise ValueError(f"the key of entry {number} may hold only letters, digits and -._~+/ "
                                 "(and '=' at the end)")
            hashed = digest(key)
            if hashed in seen:
                raise ValueError(f"the key of entry {number} is listed twice")
            seen.add(hashed)
            keys.append(ApiKey(hashed, rights, f"key #{number} ({'+'.join(sorted(rights))})"))
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing({len(self._keys)} keys)"

    def rights_summary(self) -> str:
        """How many keys hold each right, for the start-up log."""
        counts = {right: sum(right in key.rights for key in self._keys) for right in RIGHTS}
        return ", ".join(f"{count} {right}" for right, count in counts.items() if count)

    def find(self, presented: str) -> ApiKey | None:
        """The key matching `presented`, compared against every key in constant time; None when none does."""
        hashed = digest(presented)
        found = None
        for key in self._keys:
            if hmac.compare_digest(key.digest, hashed):
                found = key
        return found


def keyring(value: Any) -> KeyRing:
    """The KeyRing a config value stands for: a KeyRing, MACHINERY_API_KEYS text, or None (no keys)."""
    if isinstance(value, KeyRing):
        return value
    if not value:
        return KeyRing()
    if isinstance(value, str):
        return KeyRing.parse(value)
    raise TypeError(f"API_KEYS must be a string of key:right entries, not {type(value).__name__}")


# -- a workflow's own ingestion secrets ---------------------------------------------------------


def seal_workflow(definition: Mapping[str, Any]) -> dict:
    """A workflow definition as stored: the ingestion token replaced by its digest.

    Both secret fields are always present (None when unset) so that registering a new version
    without a secret removes the old one: a definition replaces, it does not merge.
    """
    sealed = dict(definition)
    token = sealed.pop("ingest_token", None)
    sealed["ingest_token_hash"] = digest(token) if token else None
    sealed["ingest_hmac_secret"] = sealed.get("ingest_hmac_secret") or None
    return sealed


def ingest_methods(workflow: Mapping[str, Any]) -> list[str]:
    """Which ingestion secrets a stored workflow has: "token", "hmac" (never the secrets themselves)."""
    return [name for name, key in (("token", "ingest_token_hash"), ("hmac", "ingest_hmac_secret"))
            if workflow.get(key)]


def verify_token(presented: str, token_hash: str | None) -> bool:
    """Whether a presented X-Machinery-Token matches a workflow's stored digest (constant time)."""
    if not token_hash or not presented:
        return False
    return hmac.compare_digest(digest(presented), token_hash)


def sign(body: bytes, secret: str) -> str:
    """The X-Hub-Signature-256 value of a body: sha256=<hex HMAC-SHA256>."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str, secret: str | None) -> bool:
    """Whether `header` (sha256=<hex>) is the HMAC-SHA256 of the raw body under `secret` (constant time)."""
    if not secret or not header:
        return False
    presented = header.strip()
    if not presented.lower().startswith(SIGNATURE_PREFIX):
        return False
    expected = sign(body, secret)
    return hmac.compare_digest(expected.encode("ascii"),
                               (SIGNATURE_PREFIX + presented[len(SIGNATURE_PREFIX):].lower()).encode("utf-8",
                                                                                                     "replace"))
