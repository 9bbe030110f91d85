"""Fixtures for the security tests: keys of each right, workflows with their own secrets, store snapshots."""

from __future__ import annotations

import base64

import pytest

from machinery.app import create_app

ADMIN_KEY = "admin-key-0123456789abcdef"
READ_KEY = "read-key-0123456789abcdef"
SEND_KEY = "send-key-0123456789abcdef"
WRONG_KEY = "wrong-key-0123456789abcdef"
API_KEYS = f"{ADMIN_KEY}:admin,{READ_KEY}:read,{SEND_KEY}:send"
TOKEN = "token-of-w-0123456789abcdef"
OTHER_TOKEN = "token-of-other-0123456789ab"
HMAC_SECRET = "hmac-secret-of-w-0123456789"
DEAD_ADDRESS = "http://127.0.0.1:9/"  # discard port: nothing listens, nothing is called in these tests

SERVICE = {"name": "up", "address": DEAD_ADDRESS, "inputs": [{"name": "message", "type": "string"}],
           "outputs": [{"name": "message", "type": "string"}]}


def workflow(name: str, **secrets) -> dict:
    return {"name": name, "services": ["up"], "inputs": [{"name": "message", "type": "string"}],
            "outputs": [{"name": "message", "type": "string"}], **secrets}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def basic(key: str, user: str = "ops") -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


def make_app(**config):
    return create_app({"MONGO_URI": "mongomock://localhost/machinery", "EMBEDDED_WORKERS": 0, **config})


def close(app) -> None:
    app.extensions["machinery"].close(grace_s=2)


def snapshot(store) -> dict:
    """Every document of every collection, by collection, for before/after comparisons."""
    return {name: sorted(repr(sorted(doc.items())) for doc in collection.find({}))
            for name, collection in (("services", store.services), ("workflows", store.workflows),
                                     ("events", store.events))}


@pytest.fixture
def store_of():
    return lambda app: app.extensions["machinery"].store
