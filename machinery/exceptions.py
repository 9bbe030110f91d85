"""Domain errors raised by the core and the store; the API maps them to HTTP statuses."""

from __future__ import annotations

from typing import Any


class MachineryError(Exception):
    """Base of every domain error; `errors` carries details for the reply."""

    def __init__(self, message: str, errors: Any = None):
        super().__init__(message)
        self.message = message
        self.errors = errors


class ConfigError(MachineryError):
    """A setting has a value that cannot be used."""


class NotFound(MachineryError):
    """The thing asked for does not exist."""


class Conflict(MachineryError):
    """The request clashes with the current state (a service in use, an event not failed)."""


class Gone(MachineryError):
    """The thing existed but can no longer be used (an expired or spent callback token)."""


class InvalidData(MachineryError):
    """Data does not match the fields it was checked against; `errors` names each field."""


class DataflowError(MachineryError):
    """A workflow's chain does not check; `errors` lists each break with step, field and context."""


class StoreUnavailable(MachineryError):
    """The store does not answer."""


class TooLarge(MachineryError):
    """A write would take a document past MongoDB's 16 MiB limit: permanent, trying again fails again."""


class ServiceCallError(MachineryError):
    """A call to a service failed; `retryable` says whether another attempt may succeed."""

    def __init__(self, message: str, kind: str, retryable: bool,
                 status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class StoreRefused(MachineryError):
    """The store answers but refuses the operation, and would refuse it again (an index that conflicts,
    duplicate names under a unique index, failed authentication, a limit): an operator must act, so
    retrying does not help. `code` and `code_name` are the server's."""

    def __init__(self, message: str, code: int | None = None, code_name: str | None = None):
        super().__init__(message)
        self.code = code
        self.code_name = code_name
