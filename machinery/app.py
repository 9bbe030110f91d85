"""The Flask app factory: config, store, blueprints, error handlers."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import flask_smorest
from flask import Flask

from machinery import __version__
from machinery.api import errors
from machinery.config import is_embedded, load_config
from machinery.exceptions import StoreUnavailable
from machinery.logs import configure_logging
from machinery.schemas import ErrorSchema
from machinery.store import Store

LOG = logging.getLogger(__name__)


class Api(flask_smorest.Api):
    """flask-smorest's Api documenting our error body."""

    ERROR_SCHEMA = ErrorSchema


class Runtime:
    """What the app holds between requests: config, store, and the engine that runs events."""

    def __init__(self, config: Mapping[str, Any]):
        self.config = config
        self.store = Store.connect(config["MONGO_URI"], config["MONGO_TIMEOUT_MS"])
        self.indexes_ready = False

    def ensure_indexes(self) -> bool:
        """Create the indexes once the store answers; False (and a warning) while it does not."""
        if self.indexes_ready:
            return True
        try:
            self.store.ensure_indexes(self.config["EVENT_TTL_DAYS"])
        except StoreUnavailable as error:
            LOG.warning("store not reachable yet, indexes not ensured: %s", error.message)
            return False
        self.indexes_ready = True
        return True


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: defaults and MACHINERY_* variables first, then the caller's dict over them."""
    settings = load_config(overrides=config)
    configure_logging(settings["LOG_LEVEL"], settings["LOG_FORMAT"])
    app = Flask(__name__)
    app.config.update(
        API_TITLE="Machinery",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False
    app.config["MACHINERY"] = settings

    runtime = Runtime(settings)
    app.extensions["machinery"] = runtime
    if is_embedded(settings["MONGO_URI"]):
        LOG.warning("EMBEDDED IN-MEMORY STORE (%s): everything is lost when this process exits; "
                    "set MACHINERY_MONGO_URI=mongodb://... to keep it", settings["MONGO_URI"])
    else:
        LOG.info("store: MongoDB at %s", _redacted(settings["MONGO_URI"]))
    runtime.ensure_indexes()

    @app.before_request
    def _indexes_once_store_answers():
        if not runtime.indexes_ready and not runtime.ensure_indexes():
            raise StoreUnavailable("the store is not reachable")

    api = Api(app)
    from machinery.api import health, services, workflows

    for blueprint in (services.bp, services.alias, workflows.bp, workflows.alias):
        api.register_blueprint(blueprint)
    app.register_blueprint(health.bp)
    errors.register(app)
    return app


def _redacted(uri: str) -> str:
    """A MongoDB URI without its password, for logs."""
    scheme, _, rest = uri.partition("://")
    if "@" not in rest:
        return uri
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
