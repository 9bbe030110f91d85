"""Flow control towards services over real HTTP: max_concurrency, the queued note of a step held back, the
circuit breaker, and the registration's bounds (one API process with its embedded workers)."""

from __future__ import annotations

import pytest

from machinery.app import create_app
from machinery.serving import ServerThread
from tests.support.flow_service import Watch, flow_service
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e

TEXT = [{"name": "message", "type": "string"}]


@pytest.fixture
def config():
    return {"MONGO_URI": "mongomock://localhost/machinery", "EMBEDDED_WORKERS": 6, "POLL_S": 0.05,
            "FLOW_WAIT_S": 0.2}


@pytest.fixture
def watch():
    return Watch()


@pytest.fixture
def watched(watch):
    server = ServerThread(flow_service(watch)).start()
    yield server.url + "call"
    server.stop()


@pytest.fixture
def live_app(config):
    app = create_app(config)
    server = ServerThread(app).start()
    yield f"http://127.0.0.1:{server.port}", app
    server.stop()
    app.extensions["machinery"].close(grace_s=2)


def register(http, api, address, name="upper", **limits):
    reply = http.post(f"{api}/services", json={"name": name, "address": address, "inputs": TEXT, "outputs": TEXT,
                                               **limits}, timeout=10)
    assert reply.status_code == 201, reply.text
    reply = http.post(f"{api}/workflows", json={"name": f"via-{name}", "services": [name], "inputs": TEXT,
                                                "outputs": TEXT}, timeout=10)
    assert reply.status_code == 201, reply.text


def send(http, api, workflow, message, mode="async"):
    reply = http.post(f"{api}/e/{workflow}?mode={mode}", json={"message": message}, timeout=30)
    assert reply.status_code in (201, 202, 502), reply.text
    return reply.json()["event_id"]


def ended(http, api, ids, seconds=60):
    def check():
        events = [http.get(f"{api}/events/{event_id}", timeout=10).json() for event_id in ids]
        return events if all(event["status"] in ("completed", "failed") for event in events) else None
    return wait_until(check, seconds, 0.1, f"{len(ids)} events ended")


def test_calls_in_flight_never_exceed_max_concurrency(http, live_app, watch, watched):
    # GIVEN a service that takes 40 ms, limited to 2 calls in flight, and 6 worker threads
    api, _ = live_app
    watch.latency_s = 0.04
    register(http, api, watched, max_concurrency=2)
    # WHEN 40 events are sent at once
    ids = [send(http, api, "via-upper", f"m{number}") for number in range(40)]
    events = ended(http, api, ids)
    # THEN all complete, each step with one attempt, and the service never saw more than 2 at once
    assert [event["status"] for event in events] == ["completed"] * 40
    assert all(event["steps"][0]["attempts"] == 1 for event in events)
    assert watch.max_in_flight == 2 and watch.calls() == 40
    state = http.get(f"{api}/services/upper", timeout=10).json()["flow"]
    assert state == {"in_flight": 0, "max_concurrency": 2}


def test_a_step_held_back_is_queued_and_shows_why(http, live_app, watch, watched):
    # GIVEN a service limited to 1 call in flight, busy with a call of 3 s
    api, _ = live_app
    register(http, api, watched, max_concurrency=1)
    watch.latency_s = 3.0
    first = send(http, api, "via-upper", "slow")
    wait_until(lambda: watch.in_flight == 1, 10, message="the first call in flight")
    watch.latency_s = 0.0
    # WHEN another event comes
    second = send(http, api, "via-upper", "next")
    # THEN it is pending, queued, saying why, in the API, the UI and the metrics
    event = wait_until(lambda: (e := http.get(f"{api}/events/{second}", timeout=10).json()).get("queued") and e, 10,
                       message="the second event queued")
    assert event["status"] == "pending"
    assert event["queued"]["message"] == "queued: service upper at max_concurrency 1"
    assert event["queued"]["why"] == "max_concurrency" and event["queued"]["step"] == 0
    page = http.get(f"{api}/ui/events/{second}", timeout=10).text
    assert "queued: service upper at max_concurrency 1" in page
    metrics = http.get(f"{api}/metrics", timeout=10).text
    assert 'machinery_steps_queued_total{service="upper",why="max_concurrency"}' in metrics
    assert 'machinery_events_queued{service="upper",why="max_concurrency"} 1.0' in metrics
    assert 'machinery_service_in_flight{service="upper"} 1.0' in metrics
    # AND once the slot is free it runs, its one attempt spent on the call, the note gone
    events = ended(http, api, [first, second])
    assert [e["status"] for e in events] == ["completed", "completed"]
    assert events[1]["steps"][0]["attempts"] == 1 and not events[1].get("queued")


def test_the_breaker_opens_after_the_threshold_then_one_trial_call_closes_it(http, live_app, watch, watched):
    # GIVEN a service that is down, with a breaker of 3 failures and a cool-down of 1.5 s, no retries
    api, app = live_app
    watch.down = True
    register(http, api, watched, breaker={"failure_threshold": 3, "cool_down_s": 1.5},
             retry={"max_attempts": 1, "backoff_s": 0})
    # WHEN three events fail on it
    failed = [send(http, api, "via-upper", f"f{number}", mode="sync") for number in range(3)]
    assert [e["status"] for e in ended(http, api, failed)] == ["failed"] * 3
    # THEN the breaker is open, in the API, the UI and the metrics
    service = http.get(f"{api}/services/upper", timeout=10).json()
    assert service["flow"]["breaker"]["state"] == "open" and service["flow"]["breaker"]["failures"] == 3
    assert service["flow"]["breaker"]["opened_at"]
    assert "breaker-open" in http.get(f"{api}/ui/services", timeout=10).text
    assert 'machinery_service_breaker_state{service="upper",state="open"} 1.0' in \
        http.get(f"{api}/metrics", timeout=10).text
    # AND events sent now wait for it, not calling the service, without spending attempts
    calls = watch.calls()
    watch.down = False
    watch.latency_s = 0.3
    waiting = [send(http, api, "via-upper", f"w{number}") for number in range(4)]
    event = wait_until(lambda: (e := http.get(f"{api}/events/{waiting[0]}", timeout=10).json()).get("queued") and e,
                       10, message="queued for the breaker")
    assert event["queued"]["why"] == "breaker" and "breaker open" in event["queued"]["message"]
    assert watch.calls() == calls
    # WHEN the cool-down passes
    events = ended(http, api, waiting, 30)
    # THEN one trial call went first, alone, and its success closed the breaker for the others
    assert [e["status"] for e in events] == ["completed"] * 4
    assert all(e["steps"][0]["attempts"] == 1 for e in events)
    later = sorted(watch.arrivals[calls:])
    assert len(later) == 4 and later[1] - later[0] >= 0.25, later
    assert http.get(f"{api}/services/upper", timeout=10).json()["flow"]["breaker"]["state"] == "closed"


def test_a_service_without_limits_touches_no_flow_state(http, live_app, watched):
    api, app = live_app
    register(http, api, watched)
    ids = [send(http, api, "via-upper", f"m{number}", mode="sync") for number in range(5)]
    assert [e["status"] for e in ended(http, api, ids)] == ["completed"] * 5
    store = app.extensions["machinery"].store
    assert store.flow.states() == {}
    assert "flow" not in http.get(f"{api}/services/upper", timeout=10).json()


@pytest.mark.parametrize("limits, field", [
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"max_concurrency": 10001}, "max_concurrency"),
    ({"max_concurrency": 2.5}, "max_concurrency"),
    ({"max_concurrency": "4"}, "max_concurrency"),
    ({"rate_limit": {"per_s": 0}}, "rate_limit"),
    ({"rate_limit": {"per_s": 10, "burst": 0}}, "rate_limit"),
    ({"rate_limit": {"burst": 5}}, "rate_limit"),
    ({"rate_limit": {"per_s": 10, "every": 1}}, "rate_limit"),
    ({"breaker": {"failure_threshold": 0}}, "breaker"),
    ({"breaker": {"failure_threshold": 5, "cool_down_s": -1}}, "breaker"),
    ({"breaker": {"cool_down_s": 30}}, "breaker"),
])
def test_limits_out_of_bounds_are_refused_naming_the_field_and_store_nothing(http, live_app, watched, limits, field):
    api, app = live_app
    reply = http.post(f"{api}/services", json={"name": "upper", "address": watched, "inputs": TEXT, "outputs": TEXT,
                                               **limits}, timeout=10)
    assert reply.status_code == 422
    body = reply.json()
    assert field in body["message"] and field in body["errors"]
    assert http.get(f"{api}/services/upper", timeout=10).status_code == 404


def test_a_step_that_waited_in_its_thread_is_not_queued(http, live_app, watch, watched):
    # GIVEN a rate of 10 a second, burst 1: each call after the first waits about 0.1 s, under FLOW_WAIT_S
    api, app = live_app
    register(http, api, watched, rate_limit={"per_s": 10, "burst": 1})
    # WHEN four sync events are sent one after another
    replies = [http.post(f"{api}/e/via-upper", json={"message": f"m{number}"}, timeout=30) for number in range(4)]
    # THEN each completed in its own request (201, never 202 queued), one attempt each
    assert [reply.status_code for reply in replies] == [201] * 4, [reply.text for reply in replies]
    events = ended(http, api, [reply.json()["event_id"] for reply in replies])
    assert all(event["steps"][0]["attempts"] == 1 and not event.get("queued") for event in events)
    # AND the calls were spread by the rate: 3 tokens after the first take at least 0.3 s (less what the
    # calls' own latencies move the arrivals by)
    arrivals = sorted(watch.arrivals)
    assert arrivals[-1] - arrivals[0] >= 0.25, arrivals


def test_a_map_over_a_limited_service_keeps_to_its_max_concurrency_and_queues_the_rest(http, live_app, watch,
                                                                                        watched):
    # GIVEN a tree workflow mapping 30 items, 8 at a time, over a service limited to 3 in flight (60 ms a call)
    api, app = live_app
    watch.latency_s = 0.06
    register(http, api, watched, max_concurrency=3)
    reply = http.post(f"{api}/workflows", json={
        "name": "many", "inputs": [{"name": "words", "type": {"type": "array", "items": "string"}}],
        "outputs": [{"name": "shouted", "type": {"type": "array", "items": "string"}}],
        "steps": [{"id": "each", "map": "words", "as": "word", "max_concurrency": 8,
                   "steps": [{"id": "shout", "call": "upper", "in": {"message": "word"}}],
                   "collect": {"shouted": "message"}}]}, timeout=10)
    assert reply.status_code == 201, reply.text
    # WHEN an event of 30 words is sent
    reply = http.post(f"{api}/e/many?mode=async", json={"words": [f"w{n}" for n in range(30)]}, timeout=10)
    event_id = reply.json()["event_id"]
    # THEN it completes, in order, with one attempt per item, and never more than 3 calls at once
    event, = ended(http, api, [event_id], 60)
    assert event["status"] == "completed", event
    assert event["outputs"]["shouted"] == [f"W{n}" for n in range(30)]
    assert watch.max_in_flight == 3 and watch.calls() == 30
    assert not event.get("queued")


def test_a_tree_step_held_back_parks_its_event_pending_with_the_note(http, live_app, watch, watched):
    # GIVEN a one-call tree over a service limited to 1 in flight, busy with a call of 3 s
    api, app = live_app
    register(http, api, watched, max_concurrency=1)
    assert http.post(f"{api}/workflows", json={"name": "tree-one", "inputs": TEXT, "outputs": TEXT,
                                               "steps": [{"id": "shout", "call": "upper"}]},
                     timeout=10).status_code == 201
    watch.latency_s = 3.0
    first = send(http, api, "tree-one", "slow")
    wait_until(lambda: watch.in_flight == 1, 10, message="the first call in flight")
    watch.latency_s = 0.0
    # WHEN another comes
    second = send(http, api, "tree-one", "next")
    # THEN it parks pending, its note naming the step's instance
    event = wait_until(lambda: (e := http.get(f"{api}/events/{second}", timeout=10).json()).get("queued") and e, 10,
                       message="the tree event queued")
    assert event["status"] == "pending" and event["queued"]["step"] == "shout" and event["queued"]["steps"] == 1
    assert event["queued"]["message"] == "queued: service upper at max_concurrency 1"
    assert "1 queued" in http.get(f"{api}/ui/events/{second}", timeout=10).text
    # AND it completes once the slot is free, the note cleared
    events = ended(http, api, [first, second])
    assert [e["status"] for e in events] == ["completed", "completed"]
    assert not events[1].get("queued")


def per_key_workflow(http, api, address, limit=1):
    register(http, api, address)
    reply = http.post(f"{api}/workflows", json={
        "name": "per-customer", "services": ["upper"], "concurrency": {"key": "customer", "limit": limit},
        "inputs": [*TEXT, {"name": "customer", "type": "string"}], "outputs": TEXT}, timeout=10)
    assert reply.status_code == 201, reply.text


def assert_one_at_a_time_in_order(events):
    """Per customer: the events ran one after another, in the order they came."""
    by_customer: dict[str, list] = {}
    for event in events:
        by_customer.setdefault(event["data"]["customer"], []).append(event)
    for customer, runs in by_customer.items():
        runs.sort(key=lambda event: (event["ack_date"], event["event_id"]))
        steps = [event["steps"][0] for event in runs]
        for earlier, later in zip(steps, steps[1:], strict=False):
            assert earlier["finished_at"] <= later["started_at"], (customer, earlier, later)
    return by_customer


def test_a_per_key_limit_of_one_runs_one_event_per_key_at_a_time_in_their_order(http, live_app, watch, watched):
    # GIVEN a workflow limited to 1 running event per customer, over a service taking 150 ms
    api, app = live_app
    watch.latency_s = 0.15
    per_key_workflow(http, api, watched)
    # WHEN 6 events of each of two customers are sent, interleaved
    ids = [send_keyed(http, api, f"m{number}", "c1" if number % 2 else "c2") for number in range(12)]
    # THEN a later one of a customer is queued, saying why
    event = wait_until(lambda: (e := http.get(f"{api}/events/{ids[-1]}", timeout=10).json()).get("queued") and e,
                       10, message="a queued event")
    assert event["queued"]["message"] == 'queued: workflow per-customer at concurrency 1 for key "c1"'
    assert 'machinery_workflow_events_queued{workflow="per-customer"}' in http.get(f"{api}/metrics", timeout=10).text
    # AND all complete, each customer's one at a time and in order, the two customers side by side
    events = ended(http, api, ids)
    assert [e["status"] for e in events] == ["completed"] * 12
    by_customer = assert_one_at_a_time_in_order(events)
    assert sorted(by_customer) == ["c1", "c2"] and watch.max_in_flight == 2


def send_keyed(http, api, message, customer):
    reply = http.post(f"{api}/e/per-customer?mode=async", json={"message": message, "customer": customer}, timeout=30)
    assert reply.status_code == 202, reply.text
    return reply.json()["event_id"]


@pytest.mark.parametrize("concurrency", [
    {"key": "customer"}, {"limit": 1}, {"key": "customer", "limit": 0}, {"key": "customer", "limit": 10001},
    {"key": "customer[", "limit": 1}, {"key": "", "limit": 1},
])
def test_a_bad_concurrency_is_refused_naming_it(http, live_app, watched, concurrency):
    api, app = live_app
    register(http, api, watched)
    reply = http.post(f"{api}/workflows", json={"name": "per-customer", "services": ["upper"],
                                                "concurrency": concurrency, "inputs": TEXT, "outputs": TEXT},
                      timeout=10)
    assert reply.status_code == 422 and "concurrency" in reply.json()["message"], reply.text
    assert http.get(f"{api}/workflows/per-customer", timeout=10).status_code == 404


def test_a_cancelled_event_gives_up_its_turn_to_the_next_of_its_key(http, live_app, watch, watched):
    # GIVEN a workflow limited to 1 running event per customer, over a service taking 2 s
    api, app = live_app
    watch.latency_s = 2.0
    per_key_workflow(http, api, watched)
    first = send_keyed(http, api, "first", "c1")
    wait_until(lambda: watch.calls() == 1, 10, message="the first event's call")
    second = send_keyed(http, api, "second", "c1")
    wait_until(lambda: http.get(f"{api}/events/{second}", timeout=10).json().get("queued"), 10,
               message="the second event queued behind the first")
    # WHEN the first is cancelled while its call is in flight
    reply = http.post(f"{api}/events/{first}/cancel", json={"reason": "runaway"}, timeout=10)
    assert reply.status_code == 200, reply.text
    # THEN the second starts without waiting for the first's call to end, and completes
    watch.latency_s = 0.0
    wait_until(lambda: watch.calls() == 2, 1.5, message="the second event's call before the first's ended")
    [event] = ended(http, api, [second])
    assert event["status"] == "completed" and event["outputs"] == {"message": "SECOND"}
    assert http.get(f"{api}/events/{first}", timeout=10).json()["status"] == "cancelled"
