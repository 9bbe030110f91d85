"""Large payloads over real HTTP: values past MACHINERY_OFFLOAD_BYTES go to the store's `values` bucket,
services receive plain JSON, and the event document stays small (tests/support/payload_services.py)."""

from __future__ import annotations

import json

import bson
import pytest
from bson import ObjectId

from machinery.serving import ServerThread
from tests.support.payload_services import payload_services
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
SMALL_DOCUMENT = 64 * 1024


@pytest.fixture(autouse=True)
def checked_sizes(monkeypatch):
    """Every event write in these tests checks the document stays under 1 MB (the store fails loudly)."""
    monkeypatch.setenv("MACHINERY_TEST_EVENT_MAX_BYTES", str(1000 * 1000))


@pytest.fixture
def config():
    return {"MONGO_URI": "mongomock://localhost/payloads", "EMBEDDED_WORKERS": 2, "POLL_S": 0.05}


@pytest.fixture
def services():
    app = payload_services()
    server = ServerThread(app).start()
    yield server.url.rstrip("/")
    server.stop()


@pytest.fixture
def store(live):
    return live[1].extensions["machinery"].store


def register_chain(http, api, url, name, kind, steps=3, path="/pass", field="doc"):
    names = []
    for number in range(steps):
        service = f"{name}-{number}"
        assert http.post(f"{api}/services", json={
            "name": service, "address": url + path, "timeout_s": 60, "retry": {"max_attempts": 1},
            "inputs": [{"name": field, "type": kind}], "outputs": [{"name": field, "type": kind}]},
            timeout=10).status_code in (200, 201)
        names.append(service)
    reply = http.post(f"{api}/workflows", json={
        "name": name, "services": names, "inputs": [{"name": field, "type": kind}],
        "outputs": [{"name": field, "type": kind}]}, timeout=10)
    assert reply.status_code in (200, 201), reply.text


def document_size(store, event_id: str) -> int:
    return len(bson.encode(store.events.find_one({"_id": ObjectId(event_id)})))


def big_object(size: int) -> dict:
    row = {"id": 0, "name": "élément", "tags": ["a", "b"], "score": 1.5, "ok": True, "none": None}
    rows = [{**row, "id": number} for number in range(size // 80)]
    return {"rows": rows, "count": len(rows)}


@pytest.mark.parametrize("kind", ["string", "object"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_20_mb_value_passes_a_three_step_chain_byte_identical(http, api, services, store, kind, mode):
    register_chain(http, api, services, f"big-{kind}", kind)
    value = "x" * 20 * MIB if kind == "string" else big_object(20 * MIB)
    sent = json.dumps({"doc": value}, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(sent) > 20 * MIB
    reply = http.post(f"{api}/e/big-{kind}?mode={mode}", data=sent, timeout=120,
                      headers={"Content-Type": "application/json"})
    assert reply.status_code == (201 if mode == "sync" else 202), reply.text[:500]
    event_id = reply.json()["event_id"]
    if mode == "sync":
        assert reply.json()["outputs"]["doc"] == value  # inline, as a caller expects
    else:
        wait_until(lambda: http.get(f"{api}/events/{event_id}", timeout=10).json()["status"] == "completed",
                   120, 0.2)
    shown = http.get(f"{api}/events/{event_id}", timeout=10)
    assert len(shown.content) < SMALL_DOCUMENT
    event = shown.json()
    ref = event["outputs"]["doc"]
    assert set(ref) == {"$ref", "bytes", "sha256"} and ref["bytes"] == len(sent) - len('{"doc":}')
    assert all(step["outputs"]["doc"]["$ref"] == ref["$ref"] for step in event["steps"])  # stored once
    assert event["data"]["doc"]["$ref"] == ref["$ref"]
    download = http.get(f"{api}/events/{event_id}/values/{ref['$ref']}", timeout=60)
    assert download.status_code == 200 and download.headers["Content-Type"] == "application/json"
    assert b'{"doc":' + download.content + b"}" == sent  # byte-identical at the end
    assert document_size(store, event_id) < SMALL_DOCUMENT
    assert store.values.count()[0] == 1
    seen = http.get(f"{services}/seen", timeout=10).json()
    assert seen["calls"] == 3 and seen["refs"] == 0 and seen["largest"] >= len(sent)  # never a reference


def test_a_five_step_chain_each_outputting_5_mb_completes(http, api, services, store):
    # Each step's 5 MB would be kept twice in the event (its step record and the context): 50 MB, past 16 MiB.
    register_chain(http, api, services + "/grow", "grow", "string", steps=5, path="?mib=5", field="seed")
    reply = http.post(f"{api}/e/grow", json={"seed": "start"}, timeout=120)
    assert reply.status_code == 201, reply.text[:300]
    event = reply.json()
    assert event["outputs"]["seed"].startswith("step 4:") and len(event["outputs"]["seed"]) == 5 * MIB + 7
    assert document_size(store, event["event_id"]) < SMALL_DOCUMENT
    assert store.values.count()[0] == 5  # one file a step, each read back for the next
    assert http.get(f"{services}/seen", timeout=10).json()["refs"] == 0


def test_a_map_whose_items_each_output_100_kb(http, api, services, store):
    assert http.post(f"{api}/services", json={
        "name": "piece", "address": services + "/piece?kib=100", "timeout_s": 30,
        "inputs": [{"name": "i", "type": "int"}],
        "outputs": [{"name": "blob", "type": "string"}, {"name": "i", "type": "int"}]}, timeout=10).status_code == 201
    reply = http.post(f"{api}/workflows", json={
        "name": "pieces", "inputs": [{"name": "ids", "type": {"type": "array", "items": "int"}}],
        "outputs": [{"name": "blobs", "type": {"type": "array", "items": "string"}}],
        "steps": [{"id": "each", "map": "ids", "as": "i", "max_concurrency": 4,
                   "steps": [{"id": "get", "call": "piece", "in": {"i": "i"}}], "collect": {"blobs": "blob"}}]},
        timeout=10)
    assert reply.status_code == 201, reply.text
    reply = http.post(f"{api}/e/pieces", json={"ids": list(range(40))}, timeout=120)
    assert reply.status_code == 201, reply.text[:300]
    event = reply.json()
    blobs = event["outputs"]["blobs"]  # inline in a sync reply: 4 MB
    assert [blob[:8] for blob in blobs] == [str(number).rjust(8, "0") for number in range(40)]
    assert all(len(blob) == 8 + 100 * 1024 for blob in blobs)
    assert document_size(store, event["event_id"]) < SMALL_DOCUMENT
    records = store.step_runs_of(event["event_id"])
    assert len(records) == 40 and all(len(bson.encode(record)) < 8 * 1024 for record in records)
    shown = http.get(f"{api}/events/{event['event_id']}?resolve=false", timeout=10).json()
    assert shown["outputs"]["blobs"]["bytes"] > 40 * 100 * 1024


def test_a_callback_carrying_10_mb(http, api, services, store):
    for name, path in (("later", "/accept"), ("after", "/pass")):
        assert http.post(f"{api}/services", json={
            "name": name, "address": services + path, "timeout_s": 30, "retry": {"max_attempts": 1},
            "inputs": [{"name": "doc", "type": "string"}], "outputs": [{"name": "doc", "type": "string"}]},
            timeout=10).status_code == 201
    assert http.post(f"{api}/workflows", json={
        "name": "later-then", "services": ["later", "after"], "inputs": [{"name": "doc", "type": "string"}],
        "outputs": [{"name": "doc", "type": "string"}]}, timeout=10).status_code == 201
    reply = http.post(f"{api}/e/later-then", json={"doc": "small"}, timeout=30)
    assert reply.status_code == 202 and reply.json()["status"] == "waiting", reply.text[:300]
    event_id = reply.json()["event_id"]
    callback = http.get(f"{services}/callbacks", timeout=10).json()[-1]
    value = "é" * (5 * MIB)  # 10 MB of UTF-8
    answered = http.post(callback, json={"doc": value}, timeout=60)
    assert answered.status_code == 200, answered.text[:300]
    wait_until(lambda: http.get(f"{api}/events/{event_id}", timeout=10).json()["status"] == "completed", 60, 0.1)
    event = http.get(f"{api}/events/{event_id}", timeout=10).json()
    ref = event["outputs"]["doc"]
    assert event["steps"][0]["outputs"]["doc"] == ref and ref["bytes"] == len(json.dumps(value, ensure_ascii=False)
                                                                              .encode())
    assert json.loads(http.get(f"{api}/events/{event_id}/values/{ref['$ref']}", timeout=60).content) == value
    assert document_size(store, event_id) < SMALL_DOCUMENT
    assert http.get(f"{services}/seen", timeout=10).json()["refs"] == 0


def test_a_replay_with_an_edited_large_value(http, api, services, store):
    register_chain(http, api, services, "edit", "string")
    first = http.post(f"{api}/e/edit", json={"doc": "a" * (3 * MIB)}, timeout=60).json()
    edited = "b" * (4 * MIB)
    replay = http.post(f"{api}/events/{first['event_id']}/retry", json={"from_step": 1, "context": {"doc": edited}},
                       timeout=60)
    assert replay.status_code == 200, replay.text[:300]
    assert replay.json()["outputs"]["doc"] == edited
    event = http.get(f"{api}/events/{first['event_id']}", timeout=10).json()
    assert event["runs"][0]["overrides"]["doc"]["bytes"] == len(edited) + 2
    assert event["steps"][1]["inputs"]["doc"]["bytes"] == 3 * MIB + 2  # run 0's step 1 read the first value
    assert [step["run"] for step in event["steps"]] == [0, 0, 0, 1, 1]
    assert store.values.count()[0] == 2  # the first value and the edited one, each once
    assert document_size(store, first["event_id"]) < SMALL_DOCUMENT
    # The same edit again stores nothing new: content-addressed per event.
    again = http.post(f"{api}/events/{first['event_id']}/retry", json={"from_step": 1, "context": {"doc": edited}},
                      timeout=60)
    assert again.status_code == 200 and store.values.count()[0] == 2


def test_retention_and_the_sweeper_leave_no_file_behind(http, api, services, store, live):
    register_chain(http, api, services, "kept", "string")
    ids = [http.post(f"{api}/e/kept", json={"doc": str(number) * (400 * 1024)}, timeout=60).json()["event_id"]
           for number in range(3)]
    assert store.values.count()[0] == 3
    # WHEN retention removes two events (what the TTL monitor does: the documents go, nothing else)
    store.events.delete_many({"_id": {"$in": [ObjectId(event_id) for event_id in ids[:2]]}})
    store.values.grace_s = 0
    worker = live[1].extensions["machinery"].worker
    worker.sweep_every_s, worker._next_sweep = 0, 0.0  # sweep at every idle look, from now
    # THEN an idle worker's sweeper deletes their files, and only theirs
    wait_until(lambda: store.values.count() == (1, 2), 10, 0.05, "the sweep")
    assert store.values.files.distinct("metadata.event_id") == [ids[2]]
    assert http.get(f"{api}/events/{ids[2]}", timeout=10).status_code == 200


def test_a_reply_over_the_cap_fails_the_step_naming_it(http, services, config):
    from machinery.app import create_app

    app = create_app({**config, "MAX_RESPONSE_BYTES": MIB, "EMBEDDED_WORKERS": 0})
    client, store = app.test_client(), app.extensions["machinery"].store
    for name, path in (("small", "/pass"), ("huge", "/grow?mib=2")):
        assert client.post("/services", json={"name": name, "address": services + path, "retry": {"max_attempts": 1},
                                              "inputs": [{"name": "seed", "type": "string"}],
                                              "outputs": [{"name": "seed", "type": "string"}]}).status_code == 201
    assert client.post("/workflows", json={"name": "over", "services": ["small", "huge"],
                                           "inputs": [{"name": "seed", "type": "string"}],
                                           "outputs": [{"name": "seed", "type": "string"}]}).status_code == 201
    reply = client.post("/e/over", json={"seed": "s" * (300 * 1024)})
    assert reply.status_code == 502
    error = reply.get_json()["error"]
    assert error["kind"] == "too_large" and error["step"] == 1 and "MACHINERY_MAX_RESPONSE_BYTES" in error["message"]
    assert str(MIB) in error["message"]
    assert store.values.count() == (1, 2)  # the data alone: nothing of the refused reply was kept
    # AND a body over MACHINERY_MAX_BODY_BYTES is refused whole: 413, nothing stored
    small = create_app({**config, "MAX_BODY_BYTES": MIB, "EMBEDDED_WORKERS": 0})
    small_client, small_store = small.test_client(), small.extensions["machinery"].store
    small_client.post("/services", json={"name": "small", "address": services + "/pass",
                                         "inputs": [{"name": "seed", "type": "string"}],
                                         "outputs": [{"name": "seed", "type": "string"}]})
    small_client.post("/workflows", json={"name": "one", "services": ["small"],
                                          "inputs": [{"name": "seed", "type": "string"}],
                                          "outputs": [{"name": "seed", "type": "string"}]})
    refused = small_client.post("/e/one", json={"seed": "s" * (2 * MIB)})
    assert refused.status_code == 413 and "MACHINERY_MAX_BODY_BYTES" in refused.get_json()["message"]
    assert small_store.events.count_documents({}) == 0 and small_store.values.count() == (0, 0)
    for each in (app, small):
        each.extensions["machinery"].close(grace_s=1)


def test_a_bad_ref_or_resolve_is_a_clear_4xx(http, api, services, store):
    register_chain(http, api, services, "refs", "string", steps=1)
    event = http.post(f"{api}/e/refs?resolve=false", json={"doc": "r" * (300 * 1024)}, timeout=30).json()
    ref = event["outputs"]["doc"]["$ref"]  # a reference, as asked
    other = http.post(f"{api}/e/refs", json={"doc": "q"}, timeout=30).json()["event_id"]
    assert http.get(f"{api}/events/{other}/values/{ref}", timeout=10).status_code == 404  # another event's
    assert http.get(f"{api}/events/{event['event_id']}/values/nonsense", timeout=10).status_code == 404
    assert http.get(f"{api}/events/{event['event_id']}/values/{event['event_id']}-{'0' * 64}",
                    timeout=10).status_code == 404
    bad = http.post(f"{api}/e/refs?resolve=maybe", json={"doc": "q"}, timeout=30)
    assert bad.status_code == 422 and "resolve" in bad.json()["message"]
    assert store.events.count_documents({}) == 2  # refused before anything is stored


def test_the_ui_shows_a_large_value_as_its_size_and_a_download_link(http, api, services):
    register_chain(http, api, services, "shown", "string", steps=1)
    event = http.post(f"{api}/e/shown?resolve=false", json={"doc": "u" * (5 * MIB)}, timeout=30).json()
    ref = event["outputs"]["doc"]["$ref"]
    page = http.get(f"{api}/ui/events/{event['event_id']}", timeout=10)
    assert page.status_code == 200 and len(page.content) < SMALL_DOCUMENT * 2
    link = f'href="/events/{event["event_id"]}/values/{ref}"'
    assert page.text.count(link) == 4  # data, the step's inputs and outputs, the workflow's outputs
    assert "5.2 MB, stored apart" in page.text and "uuuuuuuuuu" not in page.text
    assert http.get(api + link[6:-1], timeout=30).content == b'"' + b"u" * (5 * MIB) + b'"'


def test_a_reply_of_unknown_length_is_read_whole_up_to_the_cap(services, config):
    from machinery.app import create_app

    app = create_app({**config, "MAX_RESPONSE_BYTES": 2 * MIB, "EMBEDDED_WORKERS": 0})
    client = app.test_client()
    for name, mib in (("fits", 1.5), ("past", 3)):
        assert client.post("/services", json={"name": name, "address": f"{services}/stream?mib={mib}",
                                              "retry": {"max_attempts": 1},
                                              "inputs": [{"name": "seed", "type": "string"}],
                                              "outputs": [{"name": "seed", "type": "string"}]}).status_code == 201
        assert client.post("/workflows", json={"name": f"read-{name}", "services": [name],
                                               "inputs": [{"name": "seed", "type": "string"}],
                                               "outputs": [{"name": "seed", "type": "string"}]}).status_code == 201
    # GIVEN replies sent chunked, with no Content-Length: one under the cap is read whole
    fits = client.post("/e/read-fits", json={"seed": "a"})
    assert fits.status_code == 201 and fits.get_json()["outputs"]["seed"] == "s" * int(1.5 * MIB)
    # AND one past it fails its step, naming the cap, once the cap is passed
    past = client.post("/e/read-past", json={"seed": "a"}).get_json()
    assert past["status"] == "failed" and past["error"]["kind"] == "too_large"
    assert f"{2 * MIB} bytes allowed (MACHINERY_MAX_RESPONSE_BYTES)" in past["error"]["message"]
    app.extensions["machinery"].close(grace_s=1)
