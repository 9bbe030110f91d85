"""Secrets services name in their headers: kept encrypted (Fernet) in the store, or given by the environment.

A secret called `orders_token` is the one registered with `PUT /secrets/orders_token`, else the
variable `MACHINERY_SECRET_ORDERS_TOKEN`: a registered secret wins, since it is the one an admin can
rotate through the API. Its value is read at each call, so a rotation takes effect at the next call,
and it goes nowhere but into the headers of that call.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Mapping

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from machinery.exceptions import Conflict, InvalidData, NotFound, ServiceCallError, StoreRefused, StoreUnavailable

LOG = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9_]{1,100}\Z")
NAME_RULE = "letters, digits and '_', at most 100"
ENV_PREFIX = "MACHINERY_SECRET_"
KEY_VARIABLE = "MACHINERY_SECRETS_KEY"
MAX_VALUE_CHARS = 8192
PLAIN_CACHE_SIZE = 1024


def parse_keys(value: str) -> tuple[str, ...]:
    """MACHINERY_SECRETS_KEY: comma-separated Fernet keys (32 url-safe base64 bytes each)."""
    keys = tuple(part.strip() for part in value.split(",") if part.strip())
    for number, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ValueError(f"key {number} is not a Fernet key (32 url-safe base64-encoded bytes)") from None
    return keys


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidData(f"secret name {str(name)[:100]!r} is not valid: {NAME_RULE}",
                          errors={"name": [NAME_RULE]})


def known(store, name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether a secret of that name exists, registered or in the environment (for registration checks)."""
    environ = os.environ if environ is None else environ
    return env_name(name) in environ or store.secrets.token(name) is not None


class Keeper:
    """Registers, lists and deletes secrets, and reads their values for calls.

    The Fernet key is MACHINERY_SECRETS_KEY; unset, the embedded store gets an ephemeral one (its
    data is lost at exit anyway) and MongoDB gets none, so only the environment's secrets serve.
    """

    def __init__(self, store, config: Mapping[str, Any], environ: Mapping[str, str] | None = None):
        self.store = store
        self.environ = os.environ if environ is None else environ
        keys = config.get("SECRETS_KEY") or ()
        if isinstance(keys, str):
            keys = parse_keys(keys)
        self.ephemeral = not keys and store.embedded
        if self.ephemeral:
            keys = (Fernet.generate_key().decode(),)
        self.box = MultiFernet([Fernet(key) for key in keys]) if keys else None
        self._plain: dict[str, str] = {}  # token -> value: Fernet's HMAC and AES once per token, not per call

    # -- start-up -------------------------------------------------------------------------

    def unreadable(self) -> list[str]:
        """The stored secrets this key cannot decrypt (all of them without a key)."""
        names = []
        for name, token in self.store.secrets.tokens():
            try:
                self._decrypt(token)
            except InvalidToken:
                names.append(name)
        return sorted(names)

    def check_at_start(self) -> list[str]:
        """Log, naming them, the stored secrets that cannot be read; a store that does not answer yet is
        left to the calls themselves."""
        try:
            names = self.unreadable()
        except (StoreUnavailable, StoreRefused):
            return []
        if names:
            why = (f"{KEY_VARIABLE} is not set" if self.box is None
                   else f"they were encrypted under another key than {KEY_VARIABLE}")
            LOG.error("SECRETS UNREADABLE: %d stored secret%s cannot be decrypted (%s): %s; calls that use "
                      "them fail (kind `secret`) until the right key is set or they are registered again",
                      len(names), "" if len(names) == 1 else "s", why, ", ".join(names))
        return names

    # -- values for calls -----------------------------------------------------------------

    def _decrypt(self, token: str) -> str:
        if self.box is None:
            raise InvalidToken
        value = self._plain.get(token)
        if value is None:
            value = self.box.decrypt(token.encode()).decode()
            if len(self._plain) >= PLAIN_CACHE_SIZE:
                self._plain.clear()
            self._plain[token] = value
        return value

    def value(self, name: str) -> str:
        """The value of a secret for a call now; ServiceCallError (kind `secret`, not retried) when there is none."""
        try:
            token = self.store.secrets.token(name)
        except (StoreUnavailable, StoreRefused) as error:
            raise ServiceCallError(f"secret {name!r} could not be read: {error.message}", kind="secret",
                                   retryable=True) from None
        if token is not None:
            try:
                return self._decrypt(token)
            except InvalidToken:
                why = (f"{KEY_VARIABLE} is not set" if self.box is None
                       else f"it was encrypted under another key than {KEY_VARIABLE}")
                raise ServiceCallError(f"secret {name!r} cannot be decrypted: {why}", kind="secret",
                                       retryable=False) from None
        value = self.environ.get(env_name(name))
        if value is None:
            raise ServiceCallError(f"secret {name!r} is neither registered nor set as {env_name(name)}",
                                   kind="secret", retryable=False)
        return value

    # -- the API --------------------------------------------------------------------------

    def put(self, name: str, value: str) -> tuple[dict, bool]:
        """Register or replace a secret; the reply never holds the value."""
        check_name(name)
        if not isinstance(value, str) or not value or len(value) > MAX_VALUE_CHARS:
            raise InvalidData(f"a secret's value is a string of 1 to {MAX_VALUE_CHARS} characters",
                              errors={"value": ["must be a non-empty string"]})
        if self.box is None:
            raise Conflict(f"secrets cannot be stored: {KEY_VARIABLE} is not set, so there is no key to encrypt "
                           f"them with; set it, or give the value as the variable {env_name(name)}",
                           errors={"variable": KEY_VARIABLE})
        token = self.box.encrypt(value.encode()).decode()
        secret, created = self.store.secrets.put(name, token)
        return self._shown(secret), created

    def _shown(self, secret: dict) -> dict:
        return {**secret, "source": "stored", "also_in_environment": env_name(secret["name"]) in self.environ}

    def list(self) -> list[dict]:
        """Every secret by name: the stored ones, then those only the environment gives."""
        stored = [self._shown(secret) for secret in self.store.secrets.list()]
        names = {secret["name"].upper() for secret in stored}
        from_env = [{"name": variable[len(ENV_PREFIX):], "source": "environment"}
                    for variable in sorted(self.environ) if variable.startswith(ENV_PREFIX)
                    and NAME.match(variable[len(ENV_PREFIX):]) and variable[len(ENV_PREFIX):] not in names]
        return stored + from_env

    def get(self, name: str) -> dict:
        secret = self.store.secrets.get(name) if NAME.match(name) else None
        if secret is not None:
            return {**self._shown(secret), "used_by": self.store.secrets.services_using(name)}
        if NAME.match(name) and env_name(name) in self.environ:
            return {"name": name, "source": "environment", "used_by": self.store.secrets.services_using(name)}
        raise NotFound(f"no secret {name!r}")

    def delete(self, name: str) -> None:
        """Delete a stored secret; refused (Conflict, naming them) while services use it and the
        environment does not give it either."""
        if not NAME.match(name) or self.store.secrets.get(name) is None:
            if NAME.match(name) and env_name(name) in self.environ:
                raise Conflict(f"secret {name!r} comes from the variable {env_name(name)}: only the environment "
                               "can remove it", errors={"variable": env_name(name)})
            raise NotFound(f"no secret {name!r}")
        users = self.store.secrets.services_using(name)
        if users and env_name(name) not in self.environ:
            raise Conflict(f"secret {name!r} is used by service{'s' if len(users) > 1 else ''} {', '.join(users)}; "
                           f"change {'them' if len(users) > 1 else 'it'} first", errors={"services": users})
        self.store.secrets.delete(name)
