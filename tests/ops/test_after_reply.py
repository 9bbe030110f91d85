"""What waits until a reply is sent: the access line, the request's metric, and what a sync event tells
the metrics and the dashboard. A WSGI server closes a reply once it has sent it; these run then."""

from __future__ import annotations

import logging
from datetime import datetime

import pytest
from werkzeug.test import EnvironBuilder

from machinery import metrics
from tests.conftest import EXAMPLE_TEXT, register_examples
from tests.ops.test_logs import Collect


@pytest.fixture
def access():
    handler = Collect()
    logger = logging.getLogger("machinery.access")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.setLevel(level)
    logger.removeHandler(handler)


def served(app, path: str, **options):
    """Call the app as a WSGI server does, up to the reply read but not closed: (status, body, reply)."""
    started = []
    reply = app(EnvironBuilder(path=path, **options).get_environ(),
                lambda status, headers, exc_info=None: started.append(status))
    return started[0], b"".join(reply), reply


def counted(metric, suffix: str = "_count", **labels) -> float:
    """This process's samples of a metric ending in `suffix` (a histogram's _count, a counter's _total), summed
    over those with `labels`."""
    return sum(sample.value for family in metric.collect() for sample in family.samples
               if sample.name.endswith(suffix) and all(sample.labels.get(k) == v for k, v in labels.items()))


def finished(workflow: str) -> float:
    return counted(metrics.EVENTS_FINISHED, "_total", workflow=workflow)


def test_the_access_line_and_the_request_metric_wait_until_the_reply_is_sent(app, access):
    before = counted(metrics.HTTP_DURATION, status="404")
    # WHEN a reply is made and read, THEN neither the line nor the metric is written yet
    status, body, reply = served(app, "/services/nope", headers={"X-Request-Id": "sent-1"})
    assert status == "404 NOT FOUND" and b"no service" in body
    assert counted(metrics.HTTP_DURATION, status="404") == before and access == []
    # WHEN the server closes it, THEN both are, the line with the request's id though its context has ended
    reply.close()
    assert counted(metrics.HTTP_DURATION, status="404") == before + 1
    assert [(line.request_id, line.path, line.status) for line in access] == [("sent-1", "/services/nope", 404)]


def test_a_sync_events_metrics_and_dashboard_counts_are_told_once_its_reply_is_sent(app, client, example_services):
    register_examples(client, example_services)
    runtime = app.extensions["machinery"]
    runtime.rollups.flush()
    steps_before = counted(metrics.STEP_DURATION, service="upper", status="completed")
    events_before = finished("process-text")
    # WHEN a sync event runs and its reply is read, not yet closed
    status, body, reply = served(app, "/e/process-text", method="POST", json={"message": EXAMPLE_TEXT})
    assert status == "201 CREATED" and b'"completed"' in body
    # THEN the metrics and the dashboard have not been told of it
    assert counted(metrics.STEP_DURATION, service="upper", status="completed") == steps_before
    assert finished("process-text") == events_before
    assert runtime.rollups.flush() == 0
    # WHEN the server closes the reply, THEN they are: its steps and its end
    reply.close()
    assert counted(metrics.STEP_DURATION, service="upper", status="completed") == steps_before + 1
    assert finished("process-text") == events_before + 1
    assert runtime.rollups.flush() == 1
    buckets = runtime.store.rollups_since(datetime(2000, 1, 1))
    assert sum(doc["n"] for doc in buckets if doc["workflow"] == "process-text") == 1

