"""Logging set-up: plain text or one JSON object a line, every line of a request carrying its request id."""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from contextvars import ContextVar
from datetime import UTC, datetime

from machinery.ids import random_hex

_RESERVED = set(vars(logging.makeLogRecord({})))
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
ACCESS = logging.getLogger("machinery.access")

# The request id of the HTTP request this thread is serving; None outside a request.
request_id_var: ContextVar[str | None] = ContextVar("machinery_request_id", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()


def accepted_request_id(value: str | None) -> str:
    """The caller's request id when it is a sane token, else a new one."""
    return value if value and REQUEST_ID.match(value) else random_hex(128)


class RequestIdFilter(logging.Filter):
    """Stamp the current request id on a record that does not carry one already (`extra=` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in entry and not key.startswith("_"):
                if value is not None or key != "request_id":
                    entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, then `[request_id]` when the line belongs to a request."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [request_id={request_id}]" if request_id else line


def configure_logging(level: str, fmt: str) -> None:
    """Set the root logger's level and format once; later calls only adjust them."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler = next((h for h in root.handlers if getattr(h, "_machinery", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler._machinery = True
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())


def _access_line(method: str, path: str, status: int, started: float, request_id: str | None) -> None:
    """The access log's line for a request whose reply has been sent. Its request id is given, not
    read from the context: the request's context has ended by then."""
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    ACCESS.info("%s %s %d %.1fms", method, path, status, duration_ms,
                extra={"method": method, "path": path, "status": status, "duration_ms": duration_ms,
                       "request_id": request_id})


def loggable_path(path: str) -> str:
    """A request path fit for logs: a callback URL's single-use token is a credential, so it is cut."""
    if path.startswith("/callbacks/"):
        return "/callbacks/<token>"
    return path


def init_request_ids(app, access_log: bool = True) -> None:
    """Give every request of `app` a request id (the caller's `X-Request-Id` or a new one).

    It is kept in `g.request_id` and in a context variable the log filter reads, echoed in the
    reply's `X-Request-Id`, and, with `access_log`, one line a request is logged at info level.
    Registered first, so every later hook and handler already sees the id.
    """
    from flask import g, request

    def bind():
        g.request_id = accepted_request_id(request.headers.get(REQUEST_ID_HEADER))
        g.request_id_token = request_id_var.set(g.request_id)
        g.request_started = time.perf_counter()

    def echo(response):
        request_id = g.get("request_id")
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        if access_log and ACCESS.isEnabledFor(logging.INFO) and "request_started" in g:
            # Written once the reply is sent (the server closes it): the caller does not wait for
            # the line, and its duration counts the sending too.
            response.call_on_close(functools.partial(
                _access_line, request.method, loggable_path(request.path), response.status_code,
                g.request_started, request_id))
        return response

    def unbind(_error=None):
        token = g.pop("request_id_token", None)
        if token is not None:
            try:
                request_id_var.reset(token)
            except ValueError:  # torn down in another context: nothing of ours to undo there
                request_id_var.set(None)

    app.before_request_funcs.setdefault(None, []).insert(0, bind)
    app.after_request(echo)
    app.teardown_request(unbind)
