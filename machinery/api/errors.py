"""Map HTTP, validation and domain errors to the one JSON error shape."""

from __future__ import annotations

import logging
from http import HTTPStatus

from flask import Flask, current_app, jsonify
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from machinery.api.body import BadBody
from machinery.exceptions import (
    Conflict,
    DataflowError,
    Gone,
    InvalidData,
    MachineryError,
    NotFound,
    StoreRefused,
    StoreUnavailable,
    TooLarge,
)

LOG = logging.getLogger(__name__)

STATUS_OF = {
    NotFound: 404, Conflict: 409, Gone: 410, InvalidData: 422, DataflowError: 422,
    TooLarge: 413, StoreUnavailable: 503, StoreRefused: 503,
}


def error_body(code: int, message: str, errors=None) -> dict:
    body = {"code": code, "status": HTTPStatus(code).phrase, "message": message}
    if errors is not None:
        body["errors"] = errors
    return body


def _flatten(messages, prefix="") -> list[str]:
    """Turn marshmallow's nested messages into 'path: problem' lines."""
    if isinstance(messages, dict):
        lines = []
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            lines.extend(_flatten(value, path))
        return lines
    if isinstance(messages, list) and all(isinstance(item, str) for item in messages):
        return [f"{prefix}: {' '.join(messages)}" if prefix else " ".join(messages)]
    if isinstance(messages, list):
        return [line for item in messages for line in _flatten(item, prefix)]
    return [f"{prefix}: {messages}" if prefix else str(messages)]


def _invalid(messages) -> str:
    """One sentence naming the first few fields at fault."""
    lines = _flatten(messages)
    return "invalid request: " + "; ".join(lines[:5]) + (" ..." if len(lines) > 5 else "")


def reply(code: int, message: str, errors=None, headers=None):
    response = jsonify(error_body(code, message, errors))
    response.status_code = code
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def handle_http(error: HTTPException):
    code = error.code or 500
    data = getattr(error, "data", None) or {}
    messages = data.get("messages")
    if messages:
        # webargs nests the messages under the location ("json", "query"): drop that level.
        if isinstance(messages, dict) and len(messages) == 1:
            messages = next(iter(messages.values()))
        return reply(code, _invalid(messages), messages, headers=getattr(error, "headers", None) or data.get("headers"))
    message = data.get("message") or error.description or HTTPStatus(code).phrase
    headers = {}
    if code == 405 and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    return reply(code, message, headers=headers)


def handle_too_large(error: RequestEntityTooLarge):
    """A body over MACHINERY_MAX_BODY_BYTES, told by Content-Length or found while reading a stream."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    return reply(413, f"the request body is larger than the {limit} bytes allowed (MACHINERY_MAX_BODY_BYTES)",
                 errors={"body": [f"at most {limit} bytes"]})


def handle_domain(error: MachineryError):
    if isinstance(error, BadBody):
        return reply(error.status, error.message)
    code = next((status for kind, status in STATUS_OF.items() if isinstance(error, kind)), 500)
    if isinstance(error, StoreRefused):
        # The store logged the server's code and message once; the caller learns it is not theirs to
        # retry, and what kind of refusal it is, not the deployment's details.
        what = f" (MongoDB error {error.code}{' ' + error.code_name if error.code_name else ''})" if error.code else ""
        return reply(503, f"the store refuses this operation{what}: the deployment needs an operator; "
                          "the server log has the details")
    if code == 503:
        LOG.warning("store unavailable: %s", error.message)
        return reply(code, "the store is unavailable; try again shortly", headers={"Retry-After": "5"})
    if code == 500:
        LOG.error("unexpected domain error: %s", error.message)
        return reply(500, "internal error")
    return reply(code, error.message, error.errors)


def handle_validation(error: ValidationError):
    """A schema loaded by hand (not through @arguments) rejected its input."""
    return reply(422, _invalid(error.messages), error.messages)


def handle_unexpected(error: Exception):
    LOG.exception("unhandled error")
    return reply(500, "internal error; the server log has the details")


def register(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http)
    app.register_error_handler(RequestEntityTooLarge, handle_too_large)
    app.register_error_handler(MachineryError, handle_domain)
    app.register_error_handler(ValidationError, handle_validation)
    app.register_error_handler(Exception, handle_unexpected)
