"""Flow control across processes: the API under gunicorn and two `machinery worker` processes share one
MongoDB-speaking store (MACHINERY_TEST_MONGO_URI, or the wire-protocol test server over mongomock), and
the service they all call watches what comes: never more in flight than its max_concurrency, never more
calls in any window than its token bucket allows."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from machinery.serving import ServerThread
from machinery.store import Store
from tests.e2e.conftest import STORE_TIMEOUT_MS, worker_env
from tests.support.flow_service import Watch, flow_service
from tests.support.processes import gunicorn_api, start_worker, stop, wait_until

pytestmark = pytest.mark.e2e

TEXT = [{"name": "message", "type": "string"}]


@pytest.fixture
def env(shared_uri):
    return worker_env(shared_uri, MACHINERY_LEASE_S="5", MACHINERY_FLOW_WAIT_S="1")


@pytest.fixture
def store(shared_uri):
    store = Store.connect(shared_uri, STORE_TIMEOUT_MS)
    yield store
    store.close()


@pytest.fixture
def watch():
    return Watch()


@pytest.fixture
def watched(watch):
    server = ServerThread(flow_service(watch)).start()
    yield server.url + "call"
    server.stop()


def register(api, address, **limits):
    assert requests.post(f"{api}/services", json={"name": "upper", "address": address, "inputs": TEXT,
                                                  "outputs": TEXT, **limits}, timeout=30).status_code == 201
    assert requests.post(f"{api}/workflows", json={"name": "via-upper", "services": ["upper"], "inputs": TEXT,
                                                   "outputs": TEXT}, timeout=30).status_code == 201


def send_async(api, count):
    def send(number):
        reply = requests.post(f"{api}/e/via-upper?mode=async", json={"message": f"m{number}"}, timeout=60)
        assert reply.status_code == 202, reply.text
        return reply.json()["event_id"]
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(send, range(count)))


def test_two_workers_and_the_api_never_exceed_max_concurrency(env, store, watch, watched):
    # GIVEN a service taking 50 ms a call, limited to 3 in flight, two worker processes of 4 threads each
    watch.latency_s = 0.05
    workers = [start_worker(env, "--threads", "4") for _ in range(2)]
    try:
        with gunicorn_api(env) as api:
            register(api, watched, max_concurrency=3)
            # WHEN 80 async events and, meanwhile, 12 sync ones (run by the API's own threads) are sent
            with ThreadPoolExecutor(4) as pool:
                synced = pool.map(lambda n: requests.post(f"{api}/e/via-upper", json={"message": f"s{n}"},
                                                          timeout=120), range(12))
                ids = send_async(api, 80)
                replies = list(synced)
            assert all(reply.status_code in (201, 202) for reply in replies), [r.text for r in replies]
            ids += [reply.json()["event_id"] for reply in replies]
            wait_until(lambda: store.count_events("completed") == 92, 180, 0.5, "92 events completed")
            state = requests.get(f"{api}/services/upper", timeout=30).json()["flow"]
    finally:
        for worker in workers:
            assert stop(worker) == 0
    # THEN the service saw each event once, and never more than 3 calls at once; both workers took part
    assert watch.calls() == 92
    assert watch.max_in_flight == 3, watch.max_in_flight
    assert state == {"in_flight": 0, "max_concurrency": 3}
    owners = {claim["owner"].rsplit("/", 1)[0] for document in store.events.find({}, {"claims": 1})
              for claim in document["claims"]}
    assert len(owners) >= 2, owners
    for document in store.events.find({}, {"steps": 1}):
        assert [step["attempts"] for step in document["steps"]] == [1], document["_id"]


def test_a_burst_of_200_events_at_a_rate_of_20_a_second_fits_the_bucket(env, store, watch, watched):
    # GIVEN a service with a rate limit of 20 a second, burst 20, and two worker processes
    workers = [start_worker(env, "--threads", "4") for _ in range(2)]
    try:
        with gunicorn_api(env) as api:
            register(api, watched, rate_limit={"per_s": 20, "burst": 20})
            # WHEN 200 async events are sent at once
            send_async(api, 200)
            wait_until(lambda: store.count_events("completed") == 200, 180, 0.5, "200 events completed")
    finally:
        for worker in workers:
            assert stop(worker) == 0
    # THEN the calls fit the bucket: in any window of w seconds at most 20 + 20 w, give or take what the
    # calls' own latencies (up to 0.1 s here) move their arrivals by; and over all 200 - 20 took 9 s at least
    assert watch.calls() == 200
    for window in (0.5, 1.0, 2.0, 5.0):
        assert watch.most_in_any(window) <= 20 + 20 * (window + 0.1), (window, watch.most_in_any(window))
    arrivals = sorted(watch.arrivals)
    assert arrivals[-1] - arrivals[0] >= (200 - 20) / 20 * 0.95
    # AND no step spent an attempt on being held back
    for document in store.events.find({}, {"steps": 1}):
        assert [step["attempts"] for step in document["steps"]] == [1], document["_id"]


def test_a_per_key_limit_of_one_holds_across_workers_and_keeps_the_order(env, store, watch, watched):
    # GIVEN a workflow limited to 1 running event per customer, a service taking 50 ms, two worker processes
    watch.latency_s = 0.05
    workers = [start_worker(env, "--threads", "4") for _ in range(2)]
    try:
        with gunicorn_api(env) as api:
            register(api, watched)
            assert requests.post(f"{api}/workflows", json={
                "name": "per-customer", "services": ["upper"], "concurrency": {"key": "customer", "limit": 1},
                "inputs": [*TEXT, {"name": "customer", "type": "string"}], "outputs": TEXT},
                timeout=30).status_code == 201
            # WHEN 10 events of each of three customers are sent, one after another, interleaved
            for number in range(30):
                reply = requests.post(f"{api}/e/per-customer?mode=async",
                                      json={"message": f"m{number}", "customer": f"c{number % 3}"}, timeout=60)
                assert reply.status_code == 202, reply.text
            wait_until(lambda: store.count_events("completed") == 30, 180, 0.5, "30 events completed")
    finally:
        for worker in workers:
            assert stop(worker) == 0
    # THEN per customer, each event's call began after the one before it ended, in the order they came
    runs: dict[str, list] = {}
    for document in store.events.find({}, {"data": 1, "steps": 1, "ack_date": 1, "claims": 1}).sort(
            [("ack_date", 1), ("_id", 1)]):
        runs.setdefault(document["data"]["customer"], []).append(document)
    assert sorted(runs) == ["c0", "c1", "c2"] and all(len(events) == 10 for events in runs.values())
    for customer, events in runs.items():
        steps = [event["steps"][0] for event in events]
        for earlier, later in zip(steps, steps[1:], strict=False):
            assert earlier["finished_at"] <= later["started_at"], (customer, earlier, later)
    owners = {claim["owner"].rsplit("/", 1)[0] for events in runs.values() for event in events
              for claim in event["claims"]}
    assert len(owners) >= 2, owners
    assert 2 <= watch.max_in_flight <= 3


def test_after_the_cool_down_one_process_makes_the_one_trial_call(env, store, watch, watched):
    # GIVEN a service that is down, with a breaker of 2 failures and a cool-down of 2 s, and two workers
    watch.down = True
    workers = [start_worker(env, "--threads", "4") for _ in range(2)]
    try:
        with gunicorn_api(env) as api:
            register(api, watched, breaker={"failure_threshold": 2, "cool_down_s": 2},
                     retry={"max_attempts": 1, "backoff_s": 0})
            # WHEN two events fail on it, opening the breaker
            for number in range(2):
                assert requests.post(f"{api}/e/via-upper", json={"message": f"f{number}"},
                                     timeout=60).status_code == 502
            assert requests.get(f"{api}/services/upper", timeout=30).json()["flow"]["breaker"]["state"] == "open"
            # AND, the service back but slow (0.5 s), 16 events wait for the breaker in both workers
            before = watch.calls()
            watch.down, watch.latency_s = False, 0.5
            send_async(api, 16)
            wait_until(lambda: store.count_events("completed") == 16, 120, 0.2, "16 events completed")
            state = requests.get(f"{api}/services/upper", timeout=30).json()["flow"]["breaker"]
    finally:
        for worker in workers:
            assert stop(worker) == 0
    # THEN the first call after the cool-down was alone until it answered, then the others came
    later = sorted(watch.arrivals[before:])
    assert len(later) == 16 and later[1] - later[0] >= 0.45, later[:3]
    assert state["state"] == "closed" and state["failures"] == 0
    queued = [document for document in store.events.find({"status": "completed"}, {"steps": 1})]
    assert all(document["steps"][0]["attempts"] == 1 for document in queued)
