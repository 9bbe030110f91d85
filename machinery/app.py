"""The Flask app factory: config, store, blueprints, error handlers."""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable, Mapping

import flask_smorest
from flask import Flask, after_this_request, has_request_context, request
from flask.json.provider import DefaultJSONProvider
from flask.testing import FlaskClient

from machinery import __version__, metrics
from machinery.api import errors
from machinery.api import secrets as secrets_api
from machinery.config import is_embedded, load_config
from machinery.exceptions import MachineryError, StoreRefused, StoreUnavailable
from machinery.logs import configure_logging, init_request_ids
from machinery.rollups import Recorder, RollupObserver
from machinery.runtime import payloads
from machinery.runtime.executor import Executor, Observer
from machinery.runtime.worker import LeaseKeeper, Worker, process_owner
from machinery.schemas import ErrorSchema, json_default
from machinery.store import FINISHED, Store

LOG = logging.getLogger(__name__)
EMBEDDED_MAX_IDLE_S = 1.0
INDEXES_RETRY_REFUSED_S = 30.0  # an index MongoDB refused is tried again this often (an operator may fix it)


class Api(flask_smorest.Api):
    """flask-smorest's Api documenting our error body."""

    ERROR_SCHEMA = ErrorSchema


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON with datetimes as ISO 8601 everywhere, also inside free-form dicts."""

    default = staticmethod(json_default)
    sort_keys = False


class Runtime:
    """What the app holds between requests: config, store, and the engine that runs events."""

    def __init__(self, config: Mapping[str, Any], observer: Observer | None = None):
        self.config = config
        self.store = Store.connect(config["MONGO_URI"], config["MONGO_TIMEOUT_MS"])
        self.indexes_ready = False
        self.indexes_error: str | None = None  # why MongoDB refuses the indexes, while it does
        self._indexes_retry_at = 0.0  # while the store is down, answer 503 at once rather than wait each time
        self.owner = process_owner()
        self.keeper = LeaseKeeper(self.store, config["LEASE_S"])
        self.rollups = Recorder(self.store)
        self.executor = Executor(self.store, config, observer=RollupObserver(observer or Observer(), self.rollups))
        threads = config["EMBEDDED_WORKERS"]
        if threads is None:
            threads = 2 if self.store.embedded else 0
        # With the embedded store every new piece of work starts in this process and wakes the workers,
        # so idle ones need only look now and then for what time alone makes due (leases, deadlines).
        self.worker = Worker(self.store, self.executor, self.keeper, config, threads, name="embedded",
                             max_idle_s=EMBEDDED_MAX_IDLE_S if self.store.embedded else None) if threads else None

    def ensure_indexes(self) -> bool:
        """Create the indexes once the store answers; False (and a warning) while it does not."""
        if self.indexes_ready:
            return True
        if time.monotonic() < self._indexes_retry_at:
            return False
        try:
            self.store.ensure_indexes(self.config["EVENT_TTL_DAYS"])
        except StoreUnavailable as error:
            self._indexes_retry_at = time.monotonic() + 1.0
            LOG.warning("store not reachable yet, indexes not ensured: %s", error.message)
            return False
        except StoreRefused as error:
            # Permanent until an operator acts: named in /readyz, logged once, tried again now and then.
            if error.message != self.indexes_error:
                LOG.error("the store's indexes cannot be made, so the API does not serve: %s", error.message)
            self.indexes_error = error.message
            self._indexes_retry_at = time.monotonic() + INDEXES_RETRY_REFUSED_S
            return False
        self.indexes_ready, self.indexes_error = True, None
        try:
            self.store.check_clock(self.config["LEASE_S"] / 3)
        except MachineryError as error:
            LOG.warning("the store's clock could not be read: %s", error.message)
        return True

    def api_owner(self) -> str:
        """The lease owner for an event run in this API thread."""
        return f"{self.owner}/api-{threading.get_ident()}"

    def run_now(self, event: dict) -> dict:
        """Run an event this thread holds, renewing its lease meanwhile. In a request, what the run
        tells the metrics and the dashboard waits until the reply is sent: the caller does not wait for it."""
        owner = event["lease_owner"]
        self.keeper.hold(event["event_id"], owner)
        try:
            with self.executor.observer.deferred() as later:
                event = self.executor.run(event, owner)
        finally:
            self.keeper.drop(event["event_id"])
            if later and has_request_context():
                after_this_request(functools.partial(_tell_when_sent, later))
            else:
                _tell(later)
        if event.get("callback_url") and event["status"] in FINISHED:
            self.queued()  # its completion webhook is due
        return event

    def queued(self, event_id: str | None = None) -> None:
        """Work is due (an event stored pending, or a webhook): let this process's workers know at once."""
        if self.worker is not None:
            self.worker.wake(event_id)

    def start(self) -> None:
        if self.worker is not None:
            self.worker.start()

    def close(self, grace_s: float = 5.0) -> None:
        if self.worker is not None:
            self.worker.stop(grace_s)
        self.keeper.stop()
        self.executor.flow.stop()
        try:
            self.rollups.stop()
        except MachineryError as error:
            LOG.warning("rollups: the last counts were not written: %s", error.message)
        self.store.close()


class ClosingClient(FlaskClient):
    """The test client, closing every reply once it has read it, as a WSGI server closes a reply once
    it is sent: what waits for that (the access line, the request's metric) runs under it too."""

    def open(self, *args, buffered: bool = True, **kwargs):
        return super().open(*args, buffered=buffered, **kwargs)


def _tell_when_sent(later: list[Callable[[], None]], response):
    response.call_on_close(functools.partial(_tell, later))
    return response


def _tell(later: list[Callable[[], None]]) -> None:
    for hook in later:
        hook()


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: defaults and MACHINERY_* variables first, then the caller's dict over them."""
    settings = load_config(overrides=config)
    configure_logging(settings["LOG_LEVEL"], settings["LOG_FORMAT"])
    app = Flask(__name__)
    app.json = JSONProvider(app)
    app.test_client_class = ClosingClient
    app.config.update(
        API_TITLE="Machinery",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        MAX_CONTENT_LENGTH=settings.get("MAX_BODY_BYTES", 1024 * 1024),
    )
    app.config["MACHINERY"] = settings

    runtime = Runtime(settings, observer=metrics.MetricsObserver())
    app.extensions["machinery"] = runtime
    if is_embedded(settings["MONGO_URI"]):
        LOG.warning("EMBEDDED IN-MEMORY STORE (%s): everything is lost when this process exits; "
                    "set MACHINERY_MONGO_URI=mongodb://... to keep it", settings["MONGO_URI"])
    else:
        LOG.info("store: MongoDB at %s", _redacted(settings["MONGO_URI"]))
    runtime.ensure_indexes()
    init_request_ids(app, access_log=settings.get("ACCESS_LOG", True))
    metrics.init_app(app)
    from machinery.api import auth as api_auth

    api_auth.init_app(app, settings)  # before the store check: an unknown caller learns nothing of the store

    @app.before_request
    def _indexes_once_store_answers():
        # The probes, the scrape and the API docs answer while the store is down.
        if request.blueprint in ("health", "api-docs"):
            return
        if not runtime.indexes_ready and not runtime.ensure_indexes():
            if runtime.indexes_error:
                raise StoreRefused(runtime.indexes_error)
            raise StoreUnavailable("the store is not reachable")

    # A large value a request checked and did not store (its event refused) is not kept by the thread.
    app.teardown_request(lambda _error: payloads.forget_encoded())

    api = Api(app)
    from machinery.api import bulk, control, events, graph, health, schedules, services, spec, ui, workflows

    for blueprint in (services.bp, services.alias, workflows.bp, workflows.alias,
                      events.ingest, bulk.bp, events.bp, events.callbacks, graph.bp, control.bp):
        api.register_blueprint(blueprint)
    api.register_blueprint(schedules.bp)
    api.register_blueprint(secrets_api.bp)
    spec.document(api, keyed=bool(app.extensions["machinery_keys"]))
    app.register_blueprint(health.bp)
    app.register_blueprint(ui.bp)
    errors.register(app)
    runtime.start()
    return app


def _redacted(uri: str) -> str:
    """A MongoDB URI without its password, for logs."""
    scheme, _, rest = uri.partition("://")
    if "@" not in rest:
        return uri
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
