"""The executor against a fake transport: retries, backoff, timeouts, 4xx vs 5xx, contract errors, renames."""

from __future__ import annotations

import json
from email.message import Message

import pytest

from machinery import events
from machinery.config import load_config
from machinery.runtime import payloads
from machinery.runtime.executor import Executor, backoff_delay, parse_retry_after
from machinery.runtime.transport import CallFailed
from machinery.store import Store

OWNER = "test-owner"


class FakeReply:
    """A reply as the transport hands it over: status, case-insensitive headers, a capped read."""

    def __init__(self, status, content, headers):
        self.status = status
        self.headers = Message()
        for name, value in headers.items():
            self.headers[name] = value
        self.content = content
        self.closed = False

    def read(self, cap):
        return self.content[:cap + 1]

    def close(self):
        self.closed = True


def reply(status=200, body=None, headers=None, raw=None):
    content = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    return FakeReply(status, content, headers or {})


class FakeSession:
    """Answers each POST with the next scripted reply (a FakeReply, or an exception to raise)."""

    def __init__(self, *script):
        self.script = list(script)
        self.calls = []

    def post(self, url, body, headers, connect_timeout, read_timeout):
        self.calls.append({"url": url, "body": json.loads(body), "headers": dict(headers),
                           "timeout": (connect_timeout, read_timeout)})
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def service(name, inputs=None, outputs=None, **extra):
    return {"name": name, "address": f"http://{name}.test/",
            "inputs": [{"name": k, "type": t} for k, t in (inputs or {"message": "string"}).items()],
            "outputs": [{"name": k, "type": t} for k, t in (outputs or {"message": "string"}).items()], **extra}


@pytest.fixture
def store():
    store = Store.connect("mongomock://localhost/executor")
    store.ensure_indexes()
    return store


@pytest.fixture
def run(store):
    """Register services and a workflow, send one event, run it with a fake session; return (event, session)."""
    def go(services, script, outputs=None, operations=(), data=None, sleeps=None, workflow_inputs=None):
        for definition in services:
            store.put_service({"retry": None, "timeout_s": None, **definition})
        workflow = {"name": "w", "services": [s["name"] for s in services],
                    "inputs": workflow_inputs or [{"name": "message", "type": "string"}],
                    "outputs": outputs or [], "operations": list(operations)}
        store.put_workflow(workflow)
        event, _ = events.new_event(store, "w", {"data": data or {"message": "a b"}}, owner=OWNER)
        session = FakeSession(*script)
        waits = sleeps if sleeps is not None else []
        executor = Executor(store, load_config({}), connections=lambda: session, sleep=waits.append,
                            rand=lambda: 1.0)
        executor.run(event, OWNER)
        return store.get_event(event["event_id"]), session
    return go


def test_steps_run_in_order_passing_outputs_along(run):
    event, session = run([service("upper"), service("count", outputs={"message": "int"})],
                         [reply(body={"message": "A B"}), reply(body={"message": 1})],
                         outputs=[{"name": "n", "type": "int"}],
                         operations=[{"service": "count", "outputs": {"message": "n"}}])
    assert event["status"] == "completed" and event["outputs"] == {"n": 1}
    assert [call["body"] for call in session.calls] == [{"message": "a b"}, {"message": "A B"}]
    assert [step["status"] for step in event["steps"]] == ["completed", "completed"]
    assert "inputs" not in event["steps"][1]  # stored by reference to the context, shown as sent:
    shown = events.for_display(event)["steps"]
    assert [step["inputs"] for step in shown] == [{"message": "a b"}, {"message": "A B"}]
    assert event["steps"][1]["outputs"] == {"message": 1}
    assert all(step["duration_ms"] >= 0 and step["finished_at"] >= step["started_at"] for step in event["steps"])


def test_the_headers_name_the_event_the_step_and_the_idempotency_key(run):
    event, session = run([service("a"), service("b")], [reply(body={"message": "x"}), reply(body={"message": "y"})])
    headers = session.calls[1]["headers"]
    assert headers["X-Machinery-Event"] == event["event_id"]
    assert headers["X-Machinery-Step"] == "1"
    assert headers["Idempotency-Key"] == f"{event['event_id']}:1"
    assert headers["traceparent"].split("-")[2] == event["steps"][1]["span_id"]


def test_undeclared_reply_keys_are_dropped(run):
    event, _ = run([service("a")], [reply(body={"message": "x", "debug": {"big": 1}})])
    assert event["steps"][0]["outputs"] == {"message": "x"} and "debug" not in event["context"]


def test_a_500_then_200_is_retried_and_completes(run):
    sleeps = []
    event, session = run([service("a", retry={"max_attempts": 3, "backoff_s": 0.1})],
                         [reply(500, raw=b"boom"), reply(body={"message": "x"})], sleeps=sleeps)
    assert event["status"] == "completed" and len(session.calls) == 2
    step = event["steps"][0]
    assert step["attempts"] == 2
    assert [a["outcome"] for a in step["attempt_log"]] == ["http_status", "ok"]
    assert sleeps == [0.1]


def test_always_500_fails_after_max_attempts_with_growing_backoff(run):
    sleeps = []
    event, session = run([service("a", retry={"max_attempts": 4, "backoff_s": 0.5})],
                         [reply(503, raw=b"down") for _ in range(4)], sleeps=sleeps)
    assert event["status"] == "failed" and len(session.calls) == 4
    assert sleeps == [0.5, 1.0, 2.0]
    assert event["error"]["step"] == 0 and event["error"]["kind"] == "http_status" and event["error"]["status"] == 503
    assert "after 4 attempts" in event["error"]["message"]
    assert event["steps"][0]["status"] == "failed" and event["steps"][0]["attempts"] == 4


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_a_4xx_fails_at_once_without_retry(run, status):
    event, session = run([service("a")], [reply(status, body={"error": "no"})])
    assert event["status"] == "failed" and len(session.calls) == 1
    assert event["error"]["status"] == status and f"replied {status}" in event["error"]["message"]


def test_429_is_retried_honouring_retry_after(run):
    sleeps = []
    event, _ = run([service("a", retry={"max_attempts": 2, "backoff_s": 0.01})],
                   [reply(429, headers={"Retry-After": "3"}), reply(body={"message": "x"})], sleeps=sleeps)
    assert event["status"] == "completed" and sleeps == [3.0]


def test_timeouts_and_connection_errors_are_retried(run):
    event, session = run([service("a", timeout_s=0.5, retry={"max_attempts": 3, "backoff_s": 0})],
                         [CallFailed("no reply in time", "timeout"),
                          CallFailed("connection failed: Connection refused"), reply(body={"message": "x"})])
    assert event["status"] == "completed"
    assert [a["outcome"] for a in event["steps"][0]["attempt_log"]] == ["timeout", "connection", "ok"]
    assert session.calls[0]["timeout"] == (0.5, 0.5)


def test_a_timeout_on_every_attempt_fails_naming_the_timeout(run):
    event, _ = run([service("a", timeout_s=2, retry={"max_attempts": 2, "backoff_s": 0})],
                   [CallFailed("no reply in time", "timeout")] * 2)
    assert event["status"] == "failed" and event["error"]["kind"] == "timeout"
    assert "no reply within 2 s" in event["error"]["message"]


@pytest.mark.parametrize("body, words", [
    ({"other": 1}, "message: missing (expected string)"),
    ({"message": 3}, "message: expected string, got int"),
])
def test_missing_or_mistyped_outputs_are_contract_errors_not_retried(run, body, words):
    event, session = run([service("a")], [reply(body=body)])
    assert event["status"] == "failed" and len(session.calls) == 1
    assert event["error"]["kind"] == "contract" and words in event["error"]["message"]


@pytest.mark.parametrize("raw", [b"<html>ok</html>", b"[1, 2]", b""])
def test_a_2xx_that_is_not_a_json_object_is_a_contract_error(run, raw):
    event, _ = run([service("a")], [reply(200, raw=raw)])
    assert event["status"] == "failed" and event["error"]["kind"] == "contract"
    assert "not a JSON object" in event["error"]["message"]


def test_a_redirect_is_not_followed(run):
    event, _ = run([service("a")], [reply(302, headers={"Location": "http://elsewhere/"})])
    assert event["status"] == "failed" and event["error"]["kind"] == "redirect"
    assert "http://elsewhere/" in event["error"]["message"]


def test_a_202_parks_the_event_waiting_for_its_callback(run):
    event, session = run([service("a"), service("b")], [reply(202)])
    assert event["status"] == "waiting" and event["steps"] == []
    assert event["waiting"]["step"] == 0 and event["waiting"]["status"] == "waiting"
    assert event["lease_owner"] is None and len(session.calls) == 1


def test_input_and_output_renames_apply_at_the_step_boundary(run):
    event, session = run([service("a", inputs={"text": "string"}, outputs={"text": "string"})],
                         [reply(body={"text": "T"})], outputs=[{"name": "shout", "type": "string"}],
                         operations=[{"service": "a", "inputs": {"text": "message"}, "outputs": {"text": "shout"}}])
    assert session.calls[0]["body"] == {"text": "a b"}
    assert event["outputs"] == {"shout": "T"} and event["context"]["message"] == "a b"


def test_store_writes_are_one_per_step_plus_the_insert(store, run):
    before = store.writes
    run([service("a"), service("b"), service("c")], [reply(body={"message": "x"}) for _ in range(3)])
    assert store.writes - before == 4 + 1 + 3  # four registrations, the insert, one per step


def test_a_run_that_lost_its_lease_stops_writing(store, run):
    store.put_service({**service("a"), "retry": None, "timeout_s": None})
    store.put_service({**service("b"), "retry": None, "timeout_s": None})
    store.put_workflow({"name": "w2", "services": ["a", "b"], "inputs": [{"name": "message", "type": "string"}],
                        "outputs": [], "operations": []})
    event, _ = events.new_event(store, "w2", {"message": "x"}, owner="someone-else")
    session = FakeSession(reply(body={"message": "y"}), reply(body={"message": "z"}))
    Executor(store, load_config({}), connections=lambda: session).run(event, OWNER)
    assert store.get_event(event["event_id"])["steps"] == [] and len(session.calls) == 1


def test_backoff_is_exponential_with_jitter_between_half_and_full():
    assert backoff_delay(1, 1.0, rand=lambda: 0.0) == 0.5
    assert backoff_delay(1, 1.0, rand=lambda: 1.0) == 1.0
    assert backoff_delay(3, 1.0, rand=lambda: 1.0) == 4.0
    assert backoff_delay(20, 1.0, rand=lambda: 1.0) == 30.0


@pytest.mark.parametrize("value, seconds", [("5", 5.0), ("0", 0.0), ("-3", 0.0), ("9999", 300.0),
                                            ("soon", None), (None, None), ("nan", None)])
def test_retry_after_is_read_and_capped(value, seconds):
    assert parse_retry_after(value) == seconds


def test_retry_after_as_an_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_a_large_output_that_fails_the_contract_is_not_kept_by_the_thread(run):
    large = ["x" * 1000] * 400  # past the offload threshold: checked by encoding it
    event, _ = run([service("a")], [reply(body={"message": large})])
    assert event["status"] == "failed" and event["error"]["kind"] == "contract"
    assert getattr(payloads._last, "encoded", None) is None
