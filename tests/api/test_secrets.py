"""The /secrets resource: write-only values, admin only, refused without a key on MongoDB, rotation at the
next call, and a wrong key reported at start-up."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet
from flask import Flask, jsonify, request

from machinery.app import create_app
from machinery.serving import ServerThread
from tests.support.mongowire import WireServer

ADMIN, READER = "admin-key-0123456789", "read-key-0123456789ab"


def bearer_service(address, name="api", secret="api_token"):
    return {"name": name, "address": address, "inputs": [],
            "outputs": [{"name": "seen", "type": "string", "from": "body.seen"}],
            "request": {"method": "GET", "path": "/whoami",
                        "headers": {"Authorization": f"Bearer {{secret.{secret}}}"}}}


@pytest.fixture
def recorder():
    """A service that answers the Authorization header's length and keeps every header it was sent."""
    app = Flask("recorder")
    app.config["seen"] = []

    @app.get("/whoami")
    def whoami():
        app.config["seen"].append(request.headers.get("Authorization"))
        return jsonify({"seen": f"{len(request.headers.get('Authorization', ''))} characters"})

    server = ServerThread(app).start()
    yield server.url.rstrip("/"), app.config["seen"]
    server.stop()


def one_step(client, service):
    response = client.post("/services", json=service)
    assert response.status_code == 201, response.get_json()
    workflow = {"name": service["name"], "services": [service["name"]], "inputs": [],
                "outputs": [{"name": "seen", "type": "string"}]}
    assert client.post("/workflows", json=workflow).status_code == 201


def test_a_secret_is_registered_replaced_and_never_answered(client):
    created = client.put("/secrets/api_token", json={"value": "first-value-abc"})
    assert created.status_code == 201
    assert created.get_json()["name"] == "api_token" and created.get_json()["source"] == "stored"
    replaced = client.put("/secrets/api_token", json={"value": "second-value-xyz"})
    assert replaced.status_code == 200
    listed = client.get("/secrets").get_json()["items"]
    assert [item["name"] for item in listed] == ["api_token"] and "created_at" in listed[0]
    one = client.get("/secrets/api_token").get_json()
    assert one["used_by"] == []
    for reply in (created, replaced, client.get("/secrets"), client.get("/secrets/api_token")):
        assert b"value" not in reply.data


@pytest.mark.parametrize("name", ["with-dash", "dot.ted", "sp%20ace", "x" * 101])
def test_a_bad_secret_name_is_422_naming_the_rule(client, name):
    response = client.put(f"/secrets/{name}", json={"value": "v"})
    assert response.status_code == 422
    assert "letters, digits and '_'" in response.get_json()["message"]


@pytest.mark.parametrize("body", [{}, {"value": ""}, {"value": 3}, {"value": "v", "other": 1}])
def test_a_bad_secret_body_is_422(client, body):
    assert client.put("/secrets/ok_name", json=body).status_code == 422
    assert client.get("/secrets").get_json()["items"] == []


def test_an_unknown_secret_is_404(client):
    assert client.get("/secrets/ghost").status_code == 404
    assert client.delete("/secrets/ghost").status_code == 404


def test_a_secret_in_use_cannot_be_deleted_until_no_service_uses_it(client, recorder):
    client.put("/secrets/api_token", json={"value": "token-value-1"})
    one_step(client, bearer_service(recorder[0]))
    refused = client.delete("/secrets/api_token")
    assert refused.status_code == 409
    assert refused.get_json()["errors"] == {"services": ["api"]} and "api" in refused.get_json()["message"]
    assert client.get("/secrets/api_token").get_json()["used_by"] == ["api"]
    assert client.delete("/workflows/api").status_code == 204
    assert client.delete("/services/api").status_code == 204
    assert client.delete("/secrets/api_token").status_code == 204
    assert client.get("/secrets").get_json()["items"] == []


def test_a_rotation_takes_effect_at_the_next_call(client, recorder):
    url, seen = recorder
    client.put("/secrets/api_token", json={"value": "before-rotation"})
    one_step(client, bearer_service(url))
    assert client.post("/e/api", json={}).status_code == 201
    client.put("/secrets/api_token", json={"value": "after-rotation"})
    assert client.post("/e/api", json={}).status_code == 201
    assert seen == ["Bearer before-rotation", "Bearer after-rotation"]


def test_an_environment_secret_serves_and_a_stored_one_wins(client, recorder, monkeypatch):
    url, seen = recorder
    monkeypatch.setenv("MACHINERY_SECRET_API_TOKEN", "from-the-environment")
    one_step(client, bearer_service(url))
    assert client.get("/secrets").get_json()["items"] == [{"name": "API_TOKEN", "source": "environment"}]
    assert client.post("/e/api", json={}).status_code == 201
    client.put("/secrets/api_token", json={"value": "stored-value"})
    assert client.get("/secrets/api_token").get_json()["also_in_environment"] is True
    assert client.post("/e/api", json={}).status_code == 201
    assert seen == ["Bearer from-the-environment", "Bearer stored-value"]


def test_an_unknown_secret_is_refused_at_registration_naming_it(client, recorder, store):
    response = client.post("/services", json=bearer_service(recorder[0], secret="nowhere"))
    assert response.status_code == 422
    assert "{secret.nowhere} names no secret" in response.get_json()["message"]
    assert store.services.count_documents({}) == 0


@pytest.fixture
def keyed_config(config):
    return {**config, "API_KEYS": f"{ADMIN}:admin,{READER}:read"}


@pytest.mark.parametrize("method, path", [("GET", "/secrets"), ("GET", "/secrets/a"), ("PUT", "/secrets/a"),
                                          ("DELETE", "/secrets/a")])
def test_secrets_need_the_admin_right_even_to_read(keyed_config, method, path):
    app = create_app(keyed_config)
    try:
        client = app.test_client()
        body = {"json": {"value": "v"}} if method == "PUT" else {}
        assert client.open(path, method=method, **body).status_code == 401
        reader = client.open(path, method=method, headers={"Authorization": f"Bearer {READER}"}, **body)
        assert reader.status_code == 403 and "'admin' right" in reader.get_json()["message"]
        admin = client.open(path, method=method, headers={"Authorization": f"Bearer {ADMIN}"}, **body)
        assert admin.status_code in (200, 201, 404)
    finally:
        app.extensions["machinery"].close(grace_s=2)


@pytest.fixture
def wire():
    server = WireServer().start()
    yield server
    server.stop()


def mongo_app(wire, **settings):
    return create_app({"MONGO_URI": wire.uri, "EMBEDDED_WORKERS": 0, "MONGO_TIMEOUT_MS": 3000, **settings})


def test_on_mongodb_without_a_key_put_is_refused_naming_the_variable_and_environment_secrets_serve(
        wire, recorder, monkeypatch):
    url, seen = recorder
    monkeypatch.setenv("MACHINERY_SECRET_API_TOKEN", "env-only-value")
    app = mongo_app(wire)
    try:
        client = app.test_client()
        refused = client.put("/secrets/api_token", json={"value": "nope"})
        assert refused.status_code == 409
        assert "MACHINERY_SECRETS_KEY is not set" in refused.get_json()["message"]
        one_step(client, bearer_service(url))
        assert client.post("/e/api", json={}).status_code == 201
        assert seen == ["Bearer env-only-value"]
    finally:
        app.extensions["machinery"].close(grace_s=2)


def test_on_mongodb_a_secret_stored_under_one_key_is_read_by_another_process(wire, recorder):
    url, seen = recorder
    key = Fernet.generate_key().decode()
    first = mongo_app(wire, SECRETS_KEY=key)
    second = mongo_app(wire, SECRETS_KEY=key)
    try:
        assert first.test_client().put("/secrets/api_token", json={"value": "shared-value"}).status_code == 201
        one_step(second.test_client(), bearer_service(url))
        assert second.test_client().post("/e/api", json={}).status_code == 201
        first.test_client().put("/secrets/api_token", json={"value": "rotated-value"})
        assert second.test_client().post("/e/api", json={}).status_code == 201
        assert seen == ["Bearer shared-value", "Bearer rotated-value"]
    finally:
        first.extensions["machinery"].close(grace_s=2)
        second.extensions["machinery"].close(grace_s=2)


def test_a_wrong_key_is_reported_at_start_naming_the_secrets_and_their_calls_fail_unretried(
        wire, recorder, caplog):
    url, seen = recorder
    writer = mongo_app(wire, SECRETS_KEY=Fernet.generate_key().decode())
    writer.test_client().put("/secrets/api_token", json={"value": "under-key-one"})
    one_step(writer.test_client(), {**bearer_service(url), "retry": {"max_attempts": 3, "backoff_s": 0}})
    writer.extensions["machinery"].close(grace_s=2)
    caplog.set_level(logging.ERROR, logger="machinery.secrets")
    reader = mongo_app(wire, SECRETS_KEY=Fernet.generate_key().decode())
    try:
        logged = [record.getMessage() for record in caplog.records if record.name == "machinery.secrets"]
        assert len(logged) == 1 and "api_token" in logged[0] and "MACHINERY_SECRETS_KEY" in logged[0]
        response = reader.test_client().post("/e/api", json={})
        assert response.status_code == 502
        error = response.get_json()["error"]
        assert error["kind"] == "secret" and "api_token" in error["message"] and "after" not in error["message"]
        assert seen == []
    finally:
        reader.extensions["machinery"].close(grace_s=2)


def test_a_malformed_key_is_a_config_error_naming_the_variable():
    from machinery.config import load_config
    from machinery.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"MACHINERY_SECRETS_KEY=\(value hidden\) is not valid"):
        load_config({"MACHINERY_SECRETS_KEY": "not-a-fernet-key"})
