"""Settings: every MACHINERY_* environment variable, read once, with its default and a check."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from machinery.exceptions import ConfigError


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be a whole number of at least 1")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be a whole number of at least 0")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a number greater than 0")
    return number


def _optional_positive_float(value: str) -> float | None:
    return _positive_float(value) if value.strip() else None


MAX_TTL_SECONDS = 2147483647  # the largest expireAfterSeconds MongoDB accepts
MAX_TTL_DAYS = MAX_TTL_SECONDS // 86400  # 24855
DEFAULT_OFFLOAD_BYTES = 256 * 1024  # MACHINERY_OFFLOAD_BYTES unset: what the store and the payloads take too


def _ttl_days(value: str) -> float | None:
    """Days for the TTL index, within what MongoDB's expireAfterSeconds takes (0 to 2147483647 s)."""
    days = _optional_positive_float(value)
    if days is not None and not days * 86400 < MAX_TTL_SECONDS + 1:  # int(days * 86400) is what is used
        raise ValueError(f"must be at most {MAX_TTL_DAYS} days: MongoDB's TTL index (expireAfterSeconds) "
                         f"takes at most {MAX_TTL_SECONDS} seconds")
    return days


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        value = value.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _mongo_uri(value: str) -> str:
    if not value.startswith(("mongodb://", "mongodb+srv://", "mongomock://")):
        raise ValueError("must start with mongodb://, mongodb+srv:// or mongomock://")
    return value


def _text(value: str) -> str:
    return value


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError("must be true or false (1/0, yes/no, on/off)")
    return lowered in ("1", "true", "yes", "on")


def _optional_positive_int(value: str) -> int | None:
    return _positive_int(value) if value.strip() else None


def _api_keys(value: str):
    from machinery.auth import KeyRing

    return KeyRing.parse(value)


def _secrets_keys(value: str) -> tuple[str, ...]:
    from machinery.secrets import parse_keys

    return parse_keys(value)


def _allowed_hosts(value: str):
    from machinery.guard import parse_policy

    return parse_policy(value)


@dataclass(frozen=True)
class Setting:
    """One MACHINERY_* variable: its key in the config dict, default and meaning."""

    key: str
    default: Any
    parse: Callable[[str], Any]
    meaning: str
    secret: bool = False  # never echoed: not in errors, not in logs

    @property
    def env(self) -> str:
        return f"MACHINERY_{self.key}"


SETTINGS: tuple[Setting, ...] = (
    Setting("MONGO_URI", "mongomock://localhost/machinery", _mongo_uri,
            "Where events and definitions are kept. `mongomock://` is the embedded in-memory store "
            "(lost at exit); `mongodb://user:pass@host/db` is a real MongoDB. The database is the URI's path.",
            secret=True),
    Setting("MONGO_TIMEOUT_MS", 2000, _positive_int,
            "How long a store operation waits for MongoDB before the API answers 503."),
    Setting("PUBLIC_URL", "", _text,
            "Base URL services use to reach this API (callback URLs). Empty: the URL of the request."),
    Setting("EMBEDDED_WORKERS", None, _non_negative_int,
            "Worker threads the API process runs for async events. Unset: 2 with the embedded store "
            "(they are its only workers), 0 with MongoDB (run `machinery worker` processes)."),
    Setting("WORKER_THREADS", 4, _positive_int,
            "Events a `machinery worker` process runs at once."),
    Setting("LEASE_S", 30.0, _positive_float,
            "How long a claimed event is held without renewal before another worker may resume it."),
    Setting("POLL_S", 0.2, _positive_float,
            "How long an idle worker sleeps before looking for work again."),
    Setting("CALLBACK_TIMEOUT_S", 3600.0, _positive_float,
            "Default wait for an async service's callback (a service's `callback_timeout_s` overrides it)."),
    Setting("DEFAULT_TIMEOUT_S", 10.0, _positive_float,
            "Timeout of a service call when the service sets no `timeout_s`."),
    Setting("WEBHOOK_SECRET", "", _text,
            "Secret that signs completion webhooks (HMAC-SHA256 of the body in `X-Machinery-Signature`).",
            secret=True),
    Setting("WEBHOOK_MAX_ATTEMPTS", 5, _positive_int,
            "Attempts to deliver a completion webhook before giving up."),
    Setting("EVENT_TTL_DAYS", None, _ttl_days,
            "Finished events older than this many days are removed by a TTL index. Unset: kept forever. At "
            "most 24855 (MongoDB's `expireAfterSeconds` takes at most 2147483647 seconds)."),
    Setting("MAX_CLAIMS", 10, _positive_int,
            "Claims of one event without a step ending (its worker died, failed on it or lost its lease each "
            "time) after which the next claim fails it with kind `stuck`, naming the last error seen."),
    Setting("MAX_CALLS", 64, _positive_int,
            "Service calls one process has in flight at once, over all the branches and map items of the "
            "step trees it runs."),
    Setting("FLOW_WAIT_S", 2.0, _positive_float,
            "How long a call to a service at its max_concurrency, rate_limit or open breaker waits in its "
            "thread before its step is queued in the store (no attempt spent) and the thread moves on."),
    Setting("LOG_LEVEL", "INFO", _choice("debug", "info", "warning", "error"),
            "Logging level."),
    Setting("LOG_FORMAT", "text", _choice("text", "json"),
            "`json`: one JSON object a line."),
    Setting("ACCESS_LOG", True, _flag,
            "Log one line per HTTP request (method, path, status, duration, request id) at info level."),
    Setting("BIND", "0.0.0.0:5000", _text,
            "Address `machinery serve` listens on (`--bind` overrides it)."),
    Setting("GUNICORN_WORKERS", None, _optional_positive_int,
            "Gunicorn worker processes of `machinery serve` (`--workers` overrides it). Unset: "
            "`WEB_CONCURRENCY`, else 1. More than 1 needs MongoDB: the embedded store lives in one process."),
    Setting("GUNICORN_THREADS", 8, _positive_int,
            "Threads per gunicorn worker: requests, sync events included, served at once by each worker."),
    Setting("GUNICORN_TIMEOUT", 120, _positive_int,
            "Seconds a gunicorn worker may stay silent before it is killed and replaced; keep it above "
            "the longest sync event."),
    Setting("GUNICORN_GRACEFUL_TIMEOUT", 30, _positive_int,
            "Seconds a gunicorn worker gets on SIGTERM to finish its requests and release its events."),
    Setting("WORKER_METRICS_PORT", None, _optional_positive_int,
            "When set, `machinery worker` serves its Prometheus metrics on this port (`/metrics`)."),
    Setting("API_KEYS", "", _api_keys,
            "API keys as `key:right` entries separated by commas; rights `admin` (everything), `read` "
            "(GET on the API and the UI), `send` (POST /e/<workflow>), combined with `+` (`key:read+send`). "
            "Keys: 16 to 256 of `A-Z a-z 0-9 -._~+/`. Empty: no authentication, everything is open.",
            secret=True),
    Setting("ALLOWED_HOSTS", "", _allowed_hosts,
            "Hosts service addresses and callback URLs may name: comma-separated name patterns "
            "(`*.internal`, `upper.local`), IPs and CIDRs (`10.0.0.0/8`). Checked at registration and at "
            "every call. Empty: every host."),
    Setting("SECRETS_KEY", "", _secrets_keys,
            "Fernet key(s) that encrypt the secrets registered with `PUT /secrets/<name>`, separated by "
            "commas: the first encrypts, each one decrypts (to rotate the key). Make one with `python -c "
            "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`. "
            "Unset: an ephemeral key with the embedded store, and `PUT /secrets` refused with MongoDB "
            "(`MACHINERY_SECRET_<NAME>` variables still serve).",
            secret=True),
    Setting("MAX_BODY_BYTES", 64 * 1024 * 1024, _positive_int,
            "Largest request body the API reads; a larger one answers 413."),
    Setting("MAX_RESPONSE_BYTES", 64 * 1024 * 1024, _positive_int,
            "Largest reply body read from a service; a larger one fails the step (kind `too_large`, naming "
            "this cap). Large values are kept out of the event (see `MACHINERY_OFFLOAD_BYTES`)."),
    Setting("OFFLOAD_BYTES", DEFAULT_OFFLOAD_BYTES, _positive_int,
            "A value of an event's data, of a step's or a callback's outputs or of the workflow's outputs "
            "larger than this is stored as a file in the store's `values` bucket, and the event holds a "
            "reference to it (`{\"$ref\": ..., \"bytes\": N, \"sha256\": ...}`)."),
)

SETTINGS_BY_KEY = {setting.key: setting for setting in SETTINGS}


def load_config(environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build the config dict: defaults, then the environment, then the caller's overrides.

    A bad environment value raises ConfigError naming the variable.
    """
    environ = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env)
        if raw is None:
            config[setting.key] = setting.default
            continue
        try:
            config[setting.key] = setting.parse(raw)
        except ValueError as error:
            shown = "(value hidden)" if setting.secret else repr(raw)
            raise ConfigError(f"{setting.env}={shown} is not valid: {error}") from None
    for key, value in (overrides or {}).items():
        config[key] = value
    return config


def settings_table() -> str:
    """The Markdown table of every setting (variable, default, meaning), as the README holds it."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for setting in SETTINGS:
        if setting.default is None:
            default = "unset"
        elif setting.default == "":
            default = "empty"
        elif isinstance(setting.default, bool):
            default = f"`{str(setting.default).lower()}`"
        else:
            default = f"`{setting.default}`"
        lines.append(f"| `{setting.env}` | {default} | {setting.meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(lines) + "\n"


def is_embedded(uri: str) -> bool:
    return uri.startswith("mongomock://")


if __name__ == "__main__":  # `python -m machinery.config` prints the README's settings table
    print(settings_table(), end="")
