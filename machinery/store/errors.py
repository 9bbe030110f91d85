"""What a store error means, and the one decorator every store method runs under: the embedded store's
lock held (mongomock is not thread-safe), and pymongo's errors answered as the domain errors they mean."""

from __future__ import annotations

import functools
import logging
import re
import threading
from typing import Mapping

from pymongo.errors import (
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    PyMongoError,
    WriteConcernError,
)

from machinery.exceptions import (
    Conflict,
    MachineryError,
    NotFound,
    StoreRefused,
    StoreUnavailable,
    TooLarge,
)
from machinery.store.limits import LIMIT, is_too_large

LOG = logging.getLogger(__name__)

# Server codes that say "not now" rather than "never": a primary stepping down or shutting down, a
# network error seen by the server, a write conflict, a time limit. pymongo raises most of these as
# NotPrimaryError or AutoReconnect already; these are the ones it may leave as OperationFailure.
TRANSIENT_CODES = frozenset({
    6, 7, 50, 89, 91, 112, 134, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
})
TRANSIENT_LABELS = ("RetryableWriteError", "TransientTransactionError")
_CREDENTIALS = re.compile(r"(mongodb(?:\+srv)?://[^:/@\s]+):[^@\s]*@")
_reported: set[tuple] = set()
_reported_lock = threading.Lock()


def server_message(error: PyMongoError) -> str:
    """The server's own message of an error (or pymongo's), without any password a URI in it holds."""
    details = getattr(error, "details", None)
    message = details.get("errmsg") if isinstance(details, Mapping) and details.get("errmsg") else str(error)
    return _CREDENTIALS.sub(r"\1:***@", str(message))[:500]


def is_transient(error: PyMongoError) -> bool:
    """Whether another try may succeed: the store unreachable, slow, electing, or busy."""
    if isinstance(error, (ConnectionFailure, ExecutionTimeout, WriteConcernError)):
        return True  # ConnectionFailure: AutoReconnect, NotPrimaryError, NetworkTimeout, server selection
    if getattr(error, "timeout", False):  # any operation past MACHINERY_MONGO_TIMEOUT_MS (pymongo's timeoutMS)
        return True
    if any(error.has_error_label(label) for label in TRANSIENT_LABELS):
        return True
    return getattr(error, "code", None) in TRANSIENT_CODES


def store_error(error: PyMongoError, doing: str | None = None) -> MachineryError:
    """The domain error a pymongo error means: StoreUnavailable (503, try again) when it may pass,
    StoreRefused (an operator must act) when it will not, logged once with the server's code and message."""
    if is_transient(error):
        return StoreUnavailable(f"the store did not answer: {error.__class__.__name__}")
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    code_name = details.get("codeName") if isinstance(details, Mapping) else None
    message = server_message(error)
    what = error.__class__.__name__
    if code is not None:
        what = f"MongoDB error {code}" + (f" {code_name}" if code_name else "")
    summary = f"{doing}: " if doing else ""
    refused = StoreRefused(f"{summary}the store refused it ({what}): {message}", code=code, code_name=code_name)
    with _reported_lock:
        first = (code, message) not in _reported
        if first and len(_reported) < 1000:
            _reported.add((code, message))
    if first:
        LOG.error("store refused an operation: %s", refused.message,
                  extra={"mongo_code": code, "mongo_code_name": code_name})
    return refused


def serialised(method):
    """Run a store method under the embedded store's lock (its object's `_guard`: mongomock is not
    thread-safe), and answer pymongo's errors as the domain errors they mean (see store_error). A
    duplicate key is left to the method's caller, which knows what it means there."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._guard:
            try:
                return method(self, *args, **kwargs)
            except (DuplicateKeyError, NotFound, Conflict, TooLarge):
                raise
            except (PyMongoError, DocumentTooLarge) as error:
                if is_too_large(error):
                    raise TooLarge(f"MongoDB refused a write past {LIMIT}: {error}") from error
                raise store_error(error) from error
    return wrapper
