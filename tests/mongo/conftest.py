"""The store under test: embedded (mongomock), pymongo over the wire test server, and a real MongoDB when
MACHINERY_TEST_MONGO_URI is set (skipped otherwise)."""

from __future__ import annotations

import os
import uuid

import pytest

from machinery.store import Store
from tests.support.mongowire import WireServer

REAL_URI = os.environ.get("MACHINERY_TEST_MONGO_URI")


@pytest.fixture(scope="session")
def wire_server():
    server = WireServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["embedded", "wire", "mongodb"])
def store(request):
    if request.param == "embedded":
        store = Store.connect(f"mongomock://localhost/store-{uuid.uuid4().hex[:8]}")
    elif request.param == "wire":
        server = request.getfixturevalue("wire_server")
        store = Store.connect(server.uri.replace("/machinery", f"/store-{uuid.uuid4().hex[:8]}"), 3000)
    else:
        if not REAL_URI:
            pytest.skip("set MACHINERY_TEST_MONGO_URI=mongodb://... to run the store tests on a real MongoDB")
        store = Store.connect(REAL_URI, 5000)
        store.db.client.drop_database(store.db.name)
    store.ensure_indexes()
    yield store
    if request.param != "embedded":
        store.db.client.drop_database(store.db.name)
        store.close()
