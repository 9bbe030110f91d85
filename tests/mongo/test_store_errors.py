"""What each pymongo error means to the API: try again (StoreUnavailable, 503 with Retry-After), or an
operator must act (StoreRefused, logged once with the server's code and message, never a password)."""

from __future__ import annotations

import logging

import pytest
from pymongo.errors import (
    AutoReconnect,
    ConfigurationError,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from machinery.exceptions import StoreRefused, StoreUnavailable
from machinery.store.store import store_error


def failure(code: int, message: str, name: str = "", labels=()) -> OperationFailure:
    return OperationFailure(message, code=code, details={"errmsg": message, "code": code, "codeName": name,
                                                         "errorLabels": list(labels)})


@pytest.mark.parametrize("error", [
    AutoReconnect("connection reset"), NetworkTimeout("timed out"), ServerSelectionTimeoutError("no primary"),
    NotPrimaryError("not primary", {"code": 10107}), WriteConcernError("waiting for replication", 64),
    ExecutionTimeout("operation exceeded time limit", 50), failure(189, "stepped down", "PrimarySteppedDown"),
    failure(112, "write conflict", "WriteConflict"), failure(999, "odd", labels=["RetryableWriteError"]),
])
def test_errors_that_may_pass_are_the_store_being_unavailable(error):
    assert isinstance(store_error(error), StoreUnavailable)


@pytest.mark.parametrize("error,code", [
    (failure(85, "Index already exists with a different name: x", "IndexOptionsConflict"), 85),
    (failure(86, "An existing index has the same name", "IndexKeySpecsConflict"), 86),
    (failure(67, "TTL index 'expireAfterSeconds' option must be within an acceptable range", "CannotCreateIndex"), 67),
    (failure(13, "not authorized on machinery to execute command", "Unauthorized"), 13),
    (failure(18, "Authentication failed.", "AuthenticationFailed"), 18),
    (failure(17419, "Resulting document after update is larger than 16777216", "BSONObjectTooLarge"), 17419),
    (failure(292, "Exceeded memory limit for $group", "QueryExceededMemoryLimitNoDiskUseAllowed"), 292),
    (failure(2, "unknown operator: $nope", "BadValue"), 2),
])
def test_permanent_errors_are_refusals_naming_the_servers_code(error, code):
    # WHEN a permanent error is classified
    refused = store_error(error)
    # THEN it is a refusal carrying the server's code, name and message
    assert isinstance(refused, StoreRefused) and refused.code == code
    assert f"MongoDB error {code}" in refused.message and error.details["errmsg"] in refused.message


def test_a_refusal_is_logged_once_with_its_code(caplog):
    error = failure(13, "not authorized on logged_once_db to execute command", "Unauthorized")
    with caplog.at_level(logging.ERROR, logger="machinery.store.store"):
        for _ in range(3):
            store_error(error)
    lines = [record for record in caplog.records if "logged_once_db" in record.getMessage()]
    assert len(lines) == 1 and "13" in lines[0].getMessage()


def test_a_password_in_an_error_never_reaches_the_message():
    refused = store_error(ConfigurationError("bad option in mongodb://machinery:s3cr3t-pw@db:27017/x?foo=1"))
    assert isinstance(refused, StoreRefused)
    assert "s3cr3t-pw" not in refused.message and "machinery:***@db" in refused.message
