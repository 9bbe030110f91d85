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


@dataclass(frozen=True)
class Setting:
    """One MACHINERY_* variable: its key in the config dict, default and meaning."""

    key: str
    default: Any
    parse: Callable[[str], Any]
    meaning: str

    @property
    def env(self) -> str:
        return f"MACHINERY_{self.key}"


SETTINGS: tuple[Setting, ...] = (
    Setting("MONGO_URI", "mongomock://localhost/machinery", _mongo_uri,
            "Where events and definitions are kept. `mongomock://` is the embedded in-memory store "
            "(lost at exit); `mongodb://user:pass@host/db` is a real MongoDB. The database is the URI's path."),
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
            "Secret that signs completion webhooks (HMAC-SHA256 of the body in `X-Machinery-Signature`)."),
    Setting("WEBHOOK_MAX_ATTEMPTS", 5, _positive_int,
            "Attempts to deliver a completion webhook before giving up."),
    Setting("EVENT_TTL_DAYS", None, _optional_positive_float,
            "Finished events older than this many days are removed by a TTL index. Unset: kept forever."),
    Setting("LOG_LEVEL", "INFO", _choice("debug", "info", "warning", "error"),
            "Logging level."),
    Setting("LOG_FORMAT", "text", _choice("text", "json"),
            "`json`: one JSON object a line."),
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
            raise ConfigError(f"{setting.env}={raw!r} is not valid: {error}") from None
    for key, value in (overrides or {}).items():
        config[key] = value
    return config


def is_embedded(uri: str) -> bool:
    return uri.startswith("mongomock://")
