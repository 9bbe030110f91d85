"""When MongoDB goes away every endpoint answers a clear 503, the probes say so, and all recovers by itself."""

from __future__ import annotations

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from machinery.app import create_app
from machinery.serving import free_port
from tests.conftest import definition, register_examples
from tests.ops.procs import value


class Outage:
    """A switch between the store and its collections: while `down`, every pymongo call times out."""

    def __init__(self):
        self.down = False

    def check(self):
        if self.down:
            raise ServerSelectionTimeoutError("127.0.0.1:27017: [Errno 111] Connection refused (injected)")


class Faulty:
    """Wrap a pymongo-like object: every method call passes the outage check first."""

    def __init__(self, target, outage: Outage):
        self._target, self._outage = target, outage

    def __getattr__(self, name):
        attribute = getattr(self._target, name)
        if name in ("client", "admin"):
            return Faulty(attribute, self._outage)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            self._outage.check()
            return attribute(*args, **kwargs)

        return call

    def __getitem__(self, name):
        return Faulty(self._target[name], self._outage)


@pytest.fixture
def outage(app, monkeypatch):
    """Put the switch between the app's store and mongomock; the store pings like a real MongoDB's."""
    store = app.extensions["machinery"].store
    switch = Outage()
    monkeypatch.setattr(store, "embedded", False)  # so that ping() asks the server, as with MongoDB
    for name in ("db", "services", "workflows", "events"):
        monkeypatch.setattr(store, name, Faulty(getattr(store, name), switch))
    return switch


def store_backed_requests(event_id: str) -> list[tuple[str, str, dict | None]]:
    """One request per store-backed route, each valid enough to reach the store."""
    workflow = {"name": "w", "services": ["upper"], "inputs": [{"name": "message", "type": "string"}],
                "outputs": [{"name": "message", "type": "string"}]}
    return [
        ("get", "/services", None), ("post", "/services", definition("service-reverse")),
        ("get", "/services/upper", None), ("delete", "/services/upper", None),
        ("get", "/workflows", None), ("post", "/workflows", workflow), ("get", "/workflows/process-text", None),
        ("delete", "/workflows/process-text", None),
        ("post", "/e/process-text?mode=async", {"data": {"message": "hi"}}),
        ("get", "/events", None), ("get", f"/events/{event_id}", None),
        ("post", f"/events/{event_id}/retry", None), ("post", "/callbacks/abc.def", {"message": "x"}),
    ]


def test_readyz_answers_200_while_the_store_answers(client, outage):
    response = client.get("/readyz")
    assert response.status_code == 200 and response.get_json() == {"status": "ready", "store": "mongodb"}


def test_readyz_flips_to_503_when_the_store_goes_away_and_back_when_it_returns(client, outage):
    # GIVEN a ready API
    assert client.get("/readyz").status_code == 200
    # WHEN MongoDB stops answering
    outage.down = True
    down = client.get("/readyz")
    # THEN readiness fails with the error body, liveness holds
    assert down.status_code == 503 and down.headers["Retry-After"] == "5"
    assert down.get_json()["code"] == 503
    assert "ServerSelectionTimeoutError" in down.get_json()["message"]
    assert client.get("/healthcheck").status_code == 204
    # WHEN it answers again, THEN the API is ready again with nothing restarted
    outage.down = False
    assert client.get("/readyz").status_code == 200


def test_every_store_backed_endpoint_answers_503_with_a_message_then_recovers(client, outage):
    # GIVEN the examples registered and an event stored
    register_examples(client)
    event_id = client.post("/e/process-text?mode=async", json={"data": {"message": "hi"}}).get_json()["event_id"]
    # WHEN the store goes away
    outage.down = True
    # THEN each endpoint answers 503 in the one JSON error shape, never a 500
    for method, path, body in store_backed_requests(event_id):
        response = getattr(client, method)(path, json=body)
        assert response.status_code == 503, (method, path, response.get_json())
        assert response.get_json() == {"code": 503, "status": "Service Unavailable",
                                       "message": "the store is unavailable; try again shortly"}, (method, path)
        assert response.headers["Retry-After"] == "5"
    # WHEN it comes back, THEN the same requests work again
    outage.down = False
    assert client.get(f"/events/{event_id}").status_code == 200
    assert client.get("/services").get_json()["total"] == 5


def test_metrics_answer_during_an_outage_with_store_up_zero(client, outage):
    outage.down = True
    down = client.get("/metrics")
    outage.down = False
    up = client.get("/metrics")
    assert down.status_code == 200 and value(down.get_data(as_text=True), "machinery_store_up") == 0
    assert value(up.get_data(as_text=True), "machinery_store_up") == 1


@pytest.fixture
def unreachable_app():
    app = create_app({"MONGO_URI": f"mongodb://127.0.0.1:{free_port()}/machinery", "MONGO_TIMEOUT_MS": 100})
    yield app
    app.extensions["machinery"].close(grace_s=1)


def test_with_mongodb_unreachable_the_app_starts_and_every_api_route_answers_503(unreachable_app):
    # GIVEN an app built on a closed port (built at all: create_app does not wait for the store)
    client = unreachable_app.test_client()
    assert not unreachable_app.extensions["machinery"].indexes_ready
    # THEN the probes, the scrape and the docs answer, and every other route answers 503 with the error body
    assert client.get("/healthcheck").status_code == 204
    assert client.get("/readyz").status_code == 503
    assert client.get("/metrics").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    checked = 0
    for rule in unreachable_app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith(("health.", "api-docs.")):
            continue
        path = rule.rule.replace("<", "").replace(">", "").replace("path:", "")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(path, method=method, json={"message": "hi"})
            assert response.status_code == 503, (method, rule.rule, response.get_data(as_text=True)[:200])
            if response.is_json:  # the API's routes; a UI page may render its own error page
                assert response.get_json()["message"] == "the store is unavailable; try again shortly"
                checked += 1
    assert checked >= 10
