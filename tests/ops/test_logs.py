"""Request ids: taken from or set in X-Request-Id, echoed, on every log line of the request and on the event."""

from __future__ import annotations

import json
import logging

import pytest

from machinery.logs import JsonFormatter, RequestIdFilter, TextFormatter
from tests.conftest import EXAMPLE_TEXT, register_examples

EXECUTOR_LOG = "machinery.runtime.executor"


class Collect(logging.Handler):
    """Keep the records a handler of the app's kind (with the request-id filter) would write."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def records():
    handler = Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler.records
    root.removeHandler(handler)


def test_a_callers_request_id_is_echoed(client):
    response = client.get("/healthcheck", headers={"X-Request-Id": "abc-123"})
    assert response.headers["X-Request-Id"] == "abc-123"


def test_a_request_without_one_gets_a_new_request_id(client):
    first, second = client.get("/healthcheck"), client.get("/healthcheck")
    assert len(first.headers["X-Request-Id"]) == 32
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


@pytest.mark.parametrize("bad", ["has spaces", "x" * 129, "semi;colon"])
def test_a_request_id_that_is_not_a_sane_token_is_replaced(client, bad):
    response = client.get("/healthcheck", headers={"X-Request-Id": bad})
    assert response.headers["X-Request-Id"] != bad and len(response.headers["X-Request-Id"]) == 32


def test_errors_carry_the_request_id_too(client):
    response = client.get("/services/nope", headers={"X-Request-Id": "err-1"})
    assert response.status_code == 404 and response.headers["X-Request-Id"] == "err-1"


def test_every_log_line_of_a_request_carries_its_id_and_none_outside(client, records):
    client.get("/services/nope", headers={"X-Request-Id": "req-42"})
    logging.getLogger("machinery.test").warning("outside any request")
    inside = [record for record in records if record.name == "machinery.access"]
    assert inside and all(record.request_id == "req-42" for record in inside)
    assert records[-1].request_id is None


def test_the_event_keeps_the_request_id_the_logs_carry(client, store):
    # GIVEN the examples registered, WHEN an event is sent without any X-Request-Id
    register_examples(client)
    response = client.post("/e/process-text?mode=async", json={"data": {"message": "hi"}})
    # THEN the id the reply echoes is the one stored on the event
    stored = store.get_event(response.get_json()["event_id"])
    assert stored["trace"]["request_id"] == response.headers["X-Request-Id"]
    assert len(stored["trace"]["trace_id"]) == 32


@pytest.mark.e2e
def test_step_logs_carry_event_step_service_and_request_id(client, example_services, records):
    # GIVEN the examples served for real and step logging at debug level
    register_examples(client, example_services)
    executor_log = logging.getLogger(EXECUTOR_LOG)
    level = executor_log.level
    executor_log.setLevel(logging.DEBUG)
    try:
        # WHEN an event runs
        response = client.post("/e/process-text", json={"data": {"message": EXAMPLE_TEXT}},
                               headers={"X-Request-Id": "steps-7"})
    finally:
        executor_log.setLevel(level)
    # THEN each step's line names its event, step, service and the request that sent it
    event_id = response.get_json()["event_id"]
    steps = [record for record in records if record.name == EXECUTOR_LOG and record.levelno == logging.DEBUG
             and not hasattr(record, "status")]
    assert [(r.event_id, r.step, r.service, r.request_id) for r in steps] == [
        (event_id, 0, "upper", "steps-7"), (event_id, 1, "reverse", "steps-7"),
        (event_id, 2, "space-counter", "steps-7"),
    ]
    finished = [record for record in records if record.name == EXECUTOR_LOG and hasattr(record, "status")]
    assert finished[-1].status == "completed" and finished[-1].request_id == "steps-7"


def test_step_lines_cost_nothing_when_debug_is_off(client, example_services, records):
    register_examples(client, example_services)
    client.post("/e/process-text", json={"data": {"message": EXAMPLE_TEXT}})
    assert not [record for record in records if record.name == EXECUTOR_LOG and record.levelno < logging.INFO]


def _record(**extra) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "machinery.x", "levelno": logging.INFO, "levelname": "INFO",
                                    "msg": "hello %s", "args": ("world",), **extra})
    RequestIdFilter().filter(record)
    return record


def test_json_lines_hold_the_message_the_request_id_and_the_extra_fields():
    line = json.loads(JsonFormatter().format(_record(request_id="r-1", event_id="e-1", step=2)))
    assert line["message"] == "hello world" and line["level"] == "info" and line["logger"] == "machinery.x"
    assert (line["request_id"], line["event_id"], line["step"]) == ("r-1", "e-1", 2)


def test_json_lines_outside_a_request_have_no_request_id():
    assert "request_id" not in json.loads(JsonFormatter().format(_record()))


def test_text_lines_end_with_the_request_id_when_there_is_one():
    assert TextFormatter().format(_record(request_id="r-2")).endswith("machinery.x: hello world [request_id=r-2]")
    assert TextFormatter().format(_record()).endswith("machinery.x: hello world")
