"""Flow control's decisions, one flow document at a time: the token bucket, the slots and the breaker's
state machine (machinery.runtime.flow), the store's compare-and-set on mongomock, and the executor's side."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import mongomock
import pytest

from machinery import events
from machinery.config import load_config
from machinery.runtime import flow, turns
from machinery.runtime.executor import Executor
from machinery.runtime.flow import Limits, admit, after_call, limits_of
from machinery.store import Store
from machinery.store.flow import FlowStore
from tests.unit.test_executor import OWNER, FakeSession, reply, service

T0 = datetime(2026, 1, 1, 12, 0, 0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def applied(document: dict | None, update: dict | None, name: str = "upper") -> dict:
    """The document after `update`, as the store's write makes it."""
    store = FlowStore(mongomock.MongoClient().db, threading.RLock())
    if document is not None:
        store.collection.insert_one({"_id": name, "rev": 0, **document})
    store.change(name, lambda _: (update, None))
    found = store.state(name)
    return {key: value for key, value in found.items() if key not in ("_id", "rev")}


def test_a_service_without_limits_has_none():
    assert limits_of({"name": "upper", "address": "http://x/"}) is None
    assert limits_of({"name": "upper", "max_concurrency": 4}) == Limits("upper", max_concurrency=4)


def test_a_rate_limit_without_burst_takes_its_rate_as_burst():
    assert limits_of({"name": "u", "rate_limit": {"per_s": 5}}).burst == 5
    assert limits_of({"name": "u", "rate_limit": {"per_s": 0.2}}).burst == 1


# -- the token bucket ------------------------------------------------------------------------

def test_the_bucket_starts_full_and_lets_a_burst_through_then_holds_back():
    # GIVEN a bucket of 10 a second, burst 3
    limits = Limits("upper", per_s=10, burst=3)
    document = None
    # WHEN four calls come at the same instant
    granted = []
    for number in range(4):
        update, admission = admit(document, limits, f"h{number}", T0, 30)
        granted.append(admission.granted)
        if update:
            document = applied(document, update)
    # THEN the burst passes and the fourth waits a tenth of a second for its token
    assert granted == [True, True, True, False]
    assert admission.kind == "rate_limit" and admission.message == "service upper rate limited"
    assert admission.retry_in_s == pytest.approx(0.1)


def test_the_bucket_refills_at_its_rate_up_to_its_burst():
    limits = Limits("upper", per_s=10, burst=3)
    document = {"tokens": 0.0, "tokens_at": T0}
    assert flow.tokens_now(document, limits, at(0.25)) == pytest.approx(2.5)
    assert flow.tokens_now(document, limits, at(60)) == 3
    # A clock behind the one that took the last token refills nothing.
    assert flow.tokens_now(document, limits, at(-5)) == 0


def test_calls_over_a_second_fit_the_bucket():
    # GIVEN 20 a second, burst 20, and a call asked for every millisecond for 3 seconds
    limits = Limits("upper", per_s=20, burst=20)
    document, granted = None, []
    for ms in range(3000):
        update, admission = admit(document, limits, f"h{ms}", at(ms / 1000), 30)
        if admission.granted:
            granted.append(ms)
            document = applied(document, update)
    # THEN at most burst + rate x elapsed are granted over any window from the start
    assert len([ms for ms in granted if ms < 1000]) <= 20 + 20
    assert len(granted) == pytest.approx(20 + 20 * 3, abs=1)


# -- slots ---------------------------------------------------------------------------------

def test_slots_admit_up_to_max_concurrency_and_free_on_release():
    limits = Limits("upper", max_concurrency=2)
    store = FlowStore(mongomock.MongoClient().db, threading.RLock())

    def take(holder, when=T0):
        admission, decided = store.change("upper", lambda document: admit(document, limits, holder, when, 30))
        assert decided
        return admission

    assert take("a").granted and take("b").granted
    held = take("c")
    assert not held.granted and held.message == "service upper at max_concurrency 2"
    store.release("upper", "a")
    assert take("c").granted


def test_a_slot_whose_lease_expired_is_taken_over():
    # GIVEN both slots held, one by a process that died (its lease ran out)
    limits = Limits("upper", max_concurrency=2)
    document = {"holders": {"dead": at(-1), "alive": at(20)}}
    # WHEN another call asks
    update, admission = admit(document, limits, "new", T0, 30)
    # THEN it gets the dead one's slot, and the dead holder is dropped
    assert admission.granted
    assert update["$unset"] == {"holders.dead": ""} and "holders.new" in update["$set"]
    assert set(applied(document, update)["holders"]) == {"alive", "new"}


def test_a_call_held_back_by_the_rate_takes_no_slot():
    limits = Limits("upper", max_concurrency=4, per_s=1, burst=1)
    update, first = admit(None, limits, "a", T0, 30)
    document = applied(None, update)
    update, second = admit(document, limits, "b", T0, 30)
    assert first.granted and not second.granted and update is None


def test_a_change_written_meanwhile_by_another_is_decided_again():
    # GIVEN one slot, and another process that takes it between this change's read and its write
    limits = Limits("upper", max_concurrency=1)
    store = FlowStore(mongomock.MongoClient().db, threading.RLock())
    store.collection.insert_one({"_id": "upper", "rev": 0, "holders": {}})
    reads = []

    def decide(document):
        reads.append(document.get("rev"))
        if len(reads) == 1:
            store.collection.update_one({"_id": "upper"}, {"$set": {"holders.other": at(30)}, "$inc": {"rev": 1}})
        return admit(document, limits, "mine", T0, 30)
    # WHEN this one decides
    admission, decided = store.change("upper", decide)
    # THEN its first write found the revision moved, and its second read sees the slot taken
    assert reads == [0, 1] and decided and not admission.granted
    assert set(store.state("upper")["holders"]) == {"other"}


def test_a_renewal_never_takes_back_a_slot_dropped_as_expired():
    store = FlowStore(mongomock.MongoClient().db, threading.RLock())
    store.collection.insert_one({"_id": "upper", "rev": 0, "holders": {"a": at(1)}})
    store.renew("upper", ["a", "gone"], at(60))
    assert store.state("upper")["holders"] == {"a": at(60)}


def test_a_renewal_extends_the_trial_call_one_of_its_holders_makes_and_no_other():
    store = FlowStore(mongomock.MongoClient().db, threading.RLock())
    store.collection.insert_one({"_id": "upper", "rev": 0, "holders": {"a": at(1), "b": at(1)},
                                 "breaker": {"state": "half_open", "trial": "b", "trial_expires": at(1)}})
    store.collection.insert_one({"_id": "other", "rev": 0, "holders": {"a": at(1)},
                                 "breaker": {"state": "half_open", "trial": "a", "trial_expires": at(1)}})
    store.renew("upper", ["a", "b"], at(60))
    assert store.state("upper")["breaker"]["trial_expires"] == at(60)
    assert store.state("other")["breaker"]["trial_expires"] == at(1) and store.state("other")["holders"] == {"a": at(1)}
    store.renew("upper", [], at(90))  # nothing in flight: nothing written
    assert store.state("upper")["breaker"]["trial_expires"] == at(60)


def test_a_deleted_service_takes_its_flow_document_with_it():
    store = Store(mongomock.MongoClient().db)
    store.put_service({"name": "upper", "address": "http://127.0.0.1:9/", "max_concurrency": 1,
                       "inputs": [], "outputs": []})
    store.flow.collection.insert_one({"_id": "upper", "rev": 3, "breaker": {"state": "open", "failures": 5}})
    store.flow.collection.insert_one({"_id": "workflow:w1:k", "rev": 1, "holders": {}})

    store.delete_service("upper")

    assert store.flow.state("upper") is None and store.flow.state("workflow:w1:k") is not None


# -- the breaker -------------------------------------------------------------------------------

BREAKER = Limits("upper", threshold=3, cool_down_s=30)


def run_call(document, holder, failed, when):
    """Admit one call at `when` and end it (`failed`: a retryable failure); the document after, and the admission."""
    update, admission = admit(document, BREAKER, holder, when, 30)
    if update:
        document = applied(document, update)
    if admission.granted:
        change = after_call(document, BREAKER, holder, failed, when)
        if change:
            document = applied(document, change)
    return document, admission


def test_the_breaker_opens_after_the_threshold_of_consecutive_failures():
    document = None
    for number in range(3):
        document, admission = run_call(document, f"h{number}", True, at(number))
        assert admission.granted
    assert flow.breaker_of(document)["state"] == "open" and document["breaker"]["opened_at"] == at(2)
    _, held = run_call(document, "h9", False, at(10))
    assert not held.granted and held.kind == "breaker" and held.retry_in_s == pytest.approx(22)
    assert held.message == "service upper breaker open (until 2026-01-01T12:00:32Z)"


def test_a_success_between_failures_starts_the_count_again():
    document = None
    for number, failed in enumerate([True, True, False, True, True]):
        document, admission = run_call(document, f"h{number}", failed, at(number))
    assert flow.breaker_of(document) == {**flow.CLOSED, "failures": 2}


def test_after_the_cool_down_one_trial_call_is_let_through_and_its_success_closes_the_breaker():
    # GIVEN an open breaker whose cool-down has passed
    document = {"breaker": {**flow.CLOSED, "state": "open", "failures": 3, "opened_at": T0}}
    # WHEN a call is admitted, and another asks while it runs
    update, trial = admit(document, BREAKER, "trial", at(31), 30)
    document = applied(document, update)
    _, other = admit(document, BREAKER, "other", at(31.5), 30)
    # THEN the first is the trial (half open), the second waits for it
    assert trial.granted and trial.trial and document["breaker"]["state"] == "half_open"
    assert not other.granted and "trial call is in flight" in other.message
    # AND the trial's success closes the breaker
    document = applied(document, after_call(document, BREAKER, "trial", False, at(32)))
    assert flow.breaker_of(document) == flow.CLOSED
    assert admit(document, BREAKER, "next", at(33), 30)[1].granted


def test_a_failed_trial_opens_the_breaker_for_another_cool_down():
    document = {"breaker": {**flow.CLOSED, "state": "open", "failures": 3, "opened_at": T0}}
    document, trial = run_call(document, "trial", True, at(40))
    assert trial.trial and document["breaker"]["state"] == "open" and document["breaker"]["opened_at"] == at(40)
    assert not admit(document, BREAKER, "x", at(60), 30)[1].granted
    assert admit(document, BREAKER, "x", at(71), 30)[1].trial


def test_a_trial_whose_holder_died_is_given_to_another_call_after_its_lease():
    document = {"breaker": {**flow.CLOSED, "state": "half_open", "failures": 3, "opened_at": T0,
                            "trial": "dead", "trial_expires": at(40)}}
    assert not admit(document, BREAKER, "x", at(39), 30)[1].granted
    update, admission = admit(document, BREAKER, "x", at(41), 30)
    assert admission.trial and update["$set"]["breaker"]["trial"] == "x"


def test_calls_that_end_while_the_breaker_is_open_do_not_change_it():
    document = {"breaker": {**flow.CLOSED, "state": "open", "failures": 3, "opened_at": T0}}
    assert after_call(document, BREAKER, "late", False, at(1)) is None
    assert after_call(document, BREAKER, "late", True, at(1)) is None


def test_a_closed_breaker_with_nothing_else_admits_on_a_read_alone():
    update, admission = admit(None, BREAKER, "h", T0, 30)
    assert admission.granted and update is None
    assert after_call(None, BREAKER, "h", False, T0) is None


def test_the_state_shown_counts_only_live_slots():
    service = {"name": "upper", "max_concurrency": 4, "rate_limit": {"per_s": 2, "burst": 5},
               "breaker": {"failure_threshold": 5, "cool_down_s": 30}}
    document = {"holders": {"a": at(10), "b": at(-1)}, "tokens": 1.0, "tokens_at": T0}
    shown = flow.state_of(document, service, at(1))
    assert shown == {"in_flight": 1, "max_concurrency": 4, "tokens": 3.0, "breaker": {
        "state": "closed", "failures": 0, "opened_at": None, "failure_threshold": 5, "cool_down_s": 30.0}}


# -- a workflow's concurrency key ------------------------------------------------------------------

WORKFLOW = {"workflow_id": "w1", "name": "per-customer", "concurrency": {"key": "customer.id", "limit": 2}}


@pytest.mark.parametrize("data, value", [
    ({"customer": {"id": "c1"}}, '"c1"'),
    ({"customer": {"id": 7}}, "7"),
    ({"customer": {}}, "null"),
    ({"customer": {"id": {"b": 1, "a": 2}}}, '{"a":2,"b":1}'),
])
def test_an_event_takes_its_key_from_its_data(data, value):
    fields = turns.event_fields(WORKFLOW, data)
    assert fields == {"concurrency": {"key": f"w1:{value}", "value": value, "limit": 2, "held": False}}


def test_an_event_of_a_workflow_without_concurrency_has_no_key():
    assert turns.event_fields({"workflow_id": "w1", "name": "plain"}, {"customer": "c1"}) == {}


def test_a_key_longer_than_its_bound_is_cut_and_told_apart_by_a_digest():
    workflow = {**WORKFLOW, "concurrency": {"key": "customer", "limit": 1}}
    one = turns.event_fields(workflow, {"customer": "x" * 500})["concurrency"]["value"]
    other = turns.event_fields(workflow, {"customer": "x" * 499 + "y"})["concurrency"]["value"]
    assert len(one) == len(other) == turns.KEY_TEXT and one != other


# -- the executor's side -----------------------------------------------------------------------

class NoFlow:
    """A flow store that fails the test when asked anything."""

    def __getattr__(self, name):
        raise AssertionError(f"flow store asked for {name} by a service without limits")


@pytest.fixture
def embedded():
    store = Store.connect("mongomock://localhost/flow-executor")
    store.ensure_indexes()
    return store


@pytest.fixture
def execute(embedded):
    """Register one service and a workflow over it, send an event and run it once with scripted replies."""
    def go(definition, script):
        embedded.put_service({"retry": None, "timeout_s": None, **definition})
        embedded.put_workflow({"name": "w", "services": [definition["name"]], "inputs": [
            {"name": "message", "type": "string"}], "outputs": [], "operations": []})
        event, _ = events.new_event(embedded, "w", {"data": {"message": "a b"}}, owner=OWNER)
        session = FakeSession(*script)
        Executor(embedded, load_config({}), connections=lambda: session, sleep=lambda _: None).run(event, OWNER)
        return embedded.get_event(event["event_id"]), session
    return go


def test_a_service_without_limits_never_asks_the_flow_store(embedded, execute):
    embedded.flow = NoFlow()
    event, session = execute(service("upper"), [reply(body={"message": "A B"})])
    assert event["status"] == "completed" and len(session.calls) == 1


def test_a_breaker_that_opens_between_attempts_queues_the_step_without_spending_the_attempt_left(embedded, execute):
    # GIVEN a service with 3 attempts and a breaker of 2 failures, answering 503
    definition = service("upper", retry={"max_attempts": 3, "backoff_s": 0},
                         breaker={"failure_threshold": 2, "cool_down_s": 30})
    # WHEN its step fails twice
    event, session = execute(definition, [reply(503, raw=b"down"), reply(503, raw=b"down")])
    # THEN the breaker opened, the third attempt was not made, and the event is queued for the breaker
    assert len(session.calls) == 2
    assert event["status"] == "pending" and event["steps"] == [] and event["next_step"] == 0
    assert event["queued"]["why"] == "breaker" and event["queued"]["message"].startswith(
        "queued: service upper breaker open (until ")
    assert event["lease_expires"] > event["updated_at"] and event["claims_without_progress"] == 0
    assert flow.breaker_of(embedded.flow.state("upper"))["state"] == "open"
