"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, current_app

from machinery.api.errors import reply
from machinery.exceptions import StoreUnavailable

bp = Blueprint("health", __name__)


@bp.get("/healthcheck")
def healthcheck():
    """The process answers: 204."""
    return "", 204


@bp.get("/readyz")
def readyz():
    """200 when the store answers a ping, 503 with the error body when it does not."""
    runtime = current_app.extensions["machinery"]
    try:
        runtime.store.ping()
    except StoreUnavailable as error:
        return reply(503, f"the store is unavailable: {error.message}", headers={"Retry-After": "5"})
    return {"status": "ready", "store": "embedded" if runtime.store.embedded else "mongodb"}, 200
