"""Liveness and readiness probes, and the Prometheus scrape: they answer even while the store does not."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from machinery import metrics
from machinery.api.errors import reply
from machinery.exceptions import StoreRefused, StoreUnavailable

bp = Blueprint("health", __name__)


@bp.get("/healthcheck")
def healthcheck():
    """The process answers: 204, whatever the store's state (a liveness probe)."""
    return "", 204


@bp.get("/readyz")
def readyz():
    """200 when the store answers a ping and its indexes are ensured, 503 with the error body when not:
    with Retry-After while the store does not answer, without it, and naming the problem, when the
    store refuses (an index conflict, duplicate names, failed authentication): an operator must act."""
    runtime = current_app.extensions["machinery"]
    try:
        runtime.store.ping()
    except StoreUnavailable as error:
        return reply(503, f"the store is unavailable: {error.message}", headers={"Retry-After": "5"})
    except StoreRefused as error:
        return reply(503, f"the store refuses this deployment: {error.message}")
    if not runtime.ensure_indexes():
        if runtime.indexes_error:
            return reply(503, f"the store's indexes cannot be made: {runtime.indexes_error}")
        return reply(503, "the store answers but its indexes could not be ensured yet", headers={"Retry-After": "5"})
    return {"status": "ready", "store": "embedded" if runtime.store.embedded else "mongodb"}, 200


@bp.get("/metrics")
def scrape():
    """Prometheus metrics in the text exposition format."""
    body, content_type = metrics.exposition(current_app.extensions["machinery"].store)
    return Response(body, content_type=content_type)
