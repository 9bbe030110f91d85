"""Prometheus metrics, every one named machinery_*: events, steps, service calls, HTTP latency, store gauges.

One process: the metrics live in this module's registry. Several gunicorn workers: set
PROMETHEUS_MULTIPROC_DIR (`machinery serve` does when it starts more than one) and every
worker writes its samples there; a scrape of any worker adds them all up.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from machinery.exceptions import StoreRefused, StoreUnavailable
from machinery.runtime.executor import Observer

LOG = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

REGISTRY = CollectorRegistry()

EVENTS_RECEIVED = Counter(
    "machinery_events_received_total", "Events accepted by POST /e/<workflow>.",
    ["workflow", "mode"], registry=REGISTRY)
EVENTS_FINISHED = Counter(
    "machinery_events_finished_total", "Events that ended, by how they ended.",
    ["workflow", "status"], registry=REGISTRY)
STEP_DURATION = Histogram(
    "machinery_step_duration_seconds", "Time a step took, all its attempts and back-off included.",
    ["service", "status"], buckets=STEP_BUCKETS, registry=REGISTRY)
SERVICE_CALLS = Counter(
    "machinery_service_calls_total", "HTTP calls made to services, by outcome "
    "(ok, accepted, contract, timeout, connection, http_status, redirect, too_large).",
    ["service", "outcome"], registry=REGISTRY)
STEPS_QUEUED = Counter(
    "machinery_steps_queued_total", "Steps held back by their service's flow control and queued in the store, "
    "by why (max_concurrency, rate_limit, breaker).", ["service", "why"], registry=REGISTRY)
HTTP_DURATION = Histogram(
    "machinery_http_request_duration_seconds", "Time the API took to answer, by route and status.",
    ["method", "endpoint", "status"], registry=REGISTRY)


_children: dict[tuple, object] = {}


def _child(metric, *labels: str):
    """metric.labels(*labels), kept: every call and step looks one up, and labels() validates and locks
    each time. Children are never removed from these metrics, so a kept one stays the registry's."""
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


class MetricsObserver(Observer):
    """The executor's hooks, counted."""

    def call_attempt(self, service: str, outcome: str) -> None:
        _child(SERVICE_CALLS, service, outcome).inc()

    def step_finished(self, service: str, status: str, duration_s: float, **_where) -> None:
        _child(STEP_DURATION, service, status).observe(duration_s)

    def event_finished(self, workflow: str, status: str, **_how) -> None:
        EVENTS_FINISHED.labels(workflow, status).inc()

    def step_queued(self, service: str, why: str) -> None:
        STEPS_QUEUED.labels(service, why).inc()


def event_received(workflow: str, run_async: bool) -> None:
    EVENTS_RECEIVED.labels(workflow, "async" if run_async else "sync").inc()


class StoreCollector:
    """Gauges read from the store at scrape time: events by active status, and whether the store answers."""

    def __init__(self, store):
        self.store = store

    def collect(self):
        up = GaugeMetricFamily("machinery_store_up", "1 when the store answered this scrape, else 0.")
        active = GaugeMetricFamily("machinery_events_active",
                                   "Events not yet finished, by status (pending, running, waiting).",
                                   labels=["status"])
        try:
            counts = self.store.pending_events_by_status()
        except StoreUnavailable as error:
            LOG.warning("metrics: store gauges skipped: %s", error.message)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for status, count in counts.items():
            active.add_metric([status], count)
        yield up
        yield active


class FlowCollector:
    """Gauges of the services' flow control, read from the store at scrape time: calls in flight, each
    breaker's state, and the events queued now, by service and why."""

    def __init__(self, store):
        self.store = store

    def collect(self):
        from machinery.runtime import flow

        in_flight = GaugeMetricFamily("machinery_service_in_flight",
                                      "Calls in flight to a service with max_concurrency, across every process.",
                                      labels=["service"])
        breaker = GaugeMetricFamily("machinery_service_breaker_state",
                                    "1 for the state a service's circuit breaker is in (closed, open, half_open).",
                                    labels=["service", "state"])
        failures = GaugeMetricFamily("machinery_service_breaker_failures",
                                     "Consecutive retryable failures its breaker has counted.", labels=["service"])
        queued = GaugeMetricFamily("machinery_events_queued",
                                   "Events with a step held back by its service's flow control, by why.",
                                   labels=["service", "why"])
        turns = GaugeMetricFamily("machinery_workflow_events_queued",
                                  "Events waiting for their turn under their workflow's concurrency.",
                                  labels=["workflow"])
        try:
            shown = flow.states_shown(self.store)
            waiting = self.store.flow.queued_events()
        except (StoreUnavailable, StoreRefused) as error:
            LOG.warning("metrics: flow gauges skipped: %s", error.message)
            return
        for name, state in shown.items():
            if "in_flight" in state:
                in_flight.add_metric([name], state["in_flight"])
            if "breaker" in state:
                for each in ("closed", "open", "half_open"):
                    breaker.add_metric([name, each], 1 if state["breaker"]["state"] == each else 0)
                failures.add_metric([name], state["breaker"]["failures"])
        for (name, workflow, why), count in sorted(waiting.items()):
            if name:
                queued.add_metric([name, why], count)
            else:
                turns.add_metric([workflow], count)
        yield from (in_flight, breaker, failures, queued, turns)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition(store) -> tuple[bytes, str]:
    """The text a scrape reads: this process's metrics (or every worker's) and the store gauges."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    registry.register(StoreCollector(store))
    registry.register(FlowCollector(store))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Forward:
    """Collect another registry's metrics into a scrape registry."""

    def __init__(self, source: CollectorRegistry):
        self.source = source

    def collect(self):
        return self.source.collect()


def init_app(app) -> None:
    """Time every request by its route (`/events/<event_id>`, never the raw path)."""
    from flask import g, request

    def start():
        g.metrics_started = time.perf_counter()

    def observe(response):
        started = g.get("metrics_started")
        if started is not None:
            rule = route_label(request.url_rule.rule) if request.url_rule is not None else "<unmatched>"
            # Observed once the reply is sent, as the access line is: the time to answer, sending included.
            response.call_on_close(functools.partial(
                _observe_since, HTTP_DURATION.labels(request.method, rule, str(response.status_code)), started))
        return response

    app.before_request_funcs.setdefault(None, []).insert(0, start)
    app.after_request(observe)


def _observe_since(histogram, started: float) -> None:
    histogram.observe(time.perf_counter() - started)


_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^:<>]+)>")


def route_label(rule: str) -> str:
    """A route as its metrics label: `/services/<ref>`, without the URL converter a rule may name."""
    return _CONVERTER.sub(r"<\1>", rule)


def serve_worker_metrics(port: int | None, host: str = "0.0.0.0"):
    """For `machinery worker`: serve this process's metrics on `port` in a thread; None when no port is set."""
    if not port:
        return None
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    LOG.info("worker metrics on http://%s:%d/metrics", host, port)
    return server
