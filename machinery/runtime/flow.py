"""Flow control towards services: a service's `max_concurrency` (calls in flight across every process),
its `rate_limit` (a token bucket) and its `breaker` (a circuit breaker), all kept in the store's flow
collection (machinery.store.flow), so they hold however many API and worker processes call it.

A call to a limited service is admitted first: in one compare-and-set on the service's document the
breaker must let it through, a slot must be free and a token left; a call admitted takes its slot and
its token together, or neither. A call held back waits in its thread for a bounded time (woken when a
call of this process ends); past that, its step is *queued*: the event goes back to the store with a
due time and a note of why (`service upper at max_concurrency 4`), and no attempt is counted. Each
slot is a lease, renewed while the call lasts, so a crashed process leaks none past a lease.

The breaker: `failure_threshold` consecutive retryable failures (connection, timeout, 429, 5xx) open
it; while open nothing calls the service, and steps queue until `cool_down_s` has passed. Then one
call, the trial, is let through (claimed in the same compare-and-set, so one process makes it): the
breaker is half open until it ends. A reply (any status but 429 and 5xx) closes it; a retryable
failure opens it again for another cool-down.

A service with none of the three costs nothing: `limits_of` answers None and no store is asked.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping, TypeVar

from machinery.clock import naive_utc, utcnow
from machinery.exceptions import ServiceCallError

LOG = logging.getLogger(__name__)
T = TypeVar("T")

SLOT_POLL_S = 0.05  # how often a call held for a slot looks again (a call of this process ending wakes it sooner)
TRIAL_POLL_S = 0.25  # how often a call held while the breaker's trial call runs looks again
REQUEUE_SLOT_S = 0.5  # when a step queued for a slot is due again (jittered)
DEFAULT_WAIT_S = 2.0  # MACHINERY_FLOW_WAIT_S: the longest a call waits in its thread before its step queues
CLOSED = {"state": "closed", "failures": 0, "opened_at": None, "trial": None, "trial_expires": None}


@dataclass(frozen=True)
class Limits:
    """A service's flow settings, as its plan holds them."""

    name: str
    max_concurrency: int | None = None
    per_s: float | None = None
    burst: float | None = None
    threshold: int | None = None
    cool_down_s: float = 30.0


def limits_of(service: Mapping[str, Any]) -> Limits | None:
    """The flow settings of a plan's service; None (nothing to do) when it sets none."""
    concurrency, rate, breaker = service.get("max_concurrency"), service.get("rate_limit"), service.get("breaker")
    if concurrency is None and rate is None and breaker is None:
        return None
    per_s = float(rate["per_s"]) if rate else None
    return Limits(service["name"], concurrency, per_s,
                  float(rate.get("burst") or max(1.0, per_s)) if rate else None,
                  int(breaker["failure_threshold"]) if breaker else None,
                  float(breaker.get("cool_down_s", 30.0)) if breaker else 30.0)


# -- what a flow document lets through ---------------------------------------------------------

@dataclass
class Admission:
    """What an admission decided: granted, or held back with why and how long to wait."""

    granted: bool
    kind: str | None = None  # held back by: max_concurrency, rate_limit or breaker
    message: str | None = None
    retry_in_s: float = 0.0
    trial: bool = False  # the call admitted is the breaker's trial call
    failures: int = 0  # the breaker's count of consecutive failures, as read


def breaker_of(document: Mapping[str, Any] | None) -> dict:
    return {**CLOSED, **((document or {}).get("breaker") or {})}


def tokens_now(document: Mapping[str, Any] | None, limits: Limits, now: datetime) -> float:
    """The bucket's tokens at `now`: what was left, refilled at per_s since, up to the burst."""
    if not document or document.get("tokens") is None:
        return limits.burst
    at = naive_utc(document.get("tokens_at")) or now
    elapsed = max(0.0, (now - at).total_seconds())  # another host's clock ahead of this one refills nothing
    return min(limits.burst, float(document["tokens"]) + elapsed * limits.per_s)


def admit(document: Mapping[str, Any] | None, limits: Limits, holder: str, now: datetime,
          lease_s: float) -> tuple[dict | None, Admission]:
    """Whether a call may start now, and the write that takes its slot, its token and (half open) the
    trial: (update or None, Admission). Held back, nothing is written."""
    update: dict[str, dict] = {"$set": {}, "$unset": {}}
    name = limits.name
    trial = False
    breaker = breaker_of(document)
    if limits.threshold is not None and breaker["state"] != "closed":
        opened = naive_utc(breaker["opened_at"]) or now
        reopens = opened + timedelta(seconds=limits.cool_down_s)
        trial_expires = naive_utc(breaker["trial_expires"])
        if breaker["state"] == "open" and now < reopens:
            return None, Admission(False, "breaker", f"service {name} breaker open (until "
                                   f"{reopens.isoformat(timespec='seconds')}Z)",
                                   (reopens - now).total_seconds(), failures=breaker["failures"])
        if breaker["state"] == "half_open" and trial_expires is not None and now < trial_expires:
            return None, Admission(False, "breaker", f"service {name} breaker half_open (a trial call is in flight)",
                                   min(TRIAL_POLL_S, (trial_expires - now).total_seconds()),
                                   failures=breaker["failures"])
        trial = True
        update["$set"]["breaker"] = {**breaker, "state": "half_open", "trial": holder,
                                     "trial_expires": now + timedelta(seconds=lease_s)}
    if limits.max_concurrency is not None:
        holders = (document or {}).get("holders") or {}
        live = 0
        for other, expires in holders.items():
            if naive_utc(expires) > now:
                live += 1
            else:
                update["$unset"][f"holders.{other}"] = ""
        if live >= limits.max_concurrency:
            return None, Admission(False, "max_concurrency",
                                   f"service {name} at max_concurrency {limits.max_concurrency}", SLOT_POLL_S)
        update["$set"][f"holders.{holder}"] = now + timedelta(seconds=lease_s)
    if limits.per_s is not None:
        tokens = tokens_now(document, limits, now)
        if tokens < 1.0:
            return None, Admission(False, "rate_limit", f"service {name} rate limited",
                                   (1.0 - tokens) / limits.per_s)
        at = naive_utc((document or {}).get("tokens_at"))
        update["$set"].update(tokens=tokens - 1.0, tokens_at=max(now, at) if at else now)
    if not update["$set"] and not update["$unset"]:
        update = None  # a closed breaker alone: a read is enough
    return update, Admission(True, trial=trial, failures=breaker["failures"])


def after_call(document: Mapping[str, Any] | None, limits: Limits, holder: str, failed: bool,
               now: datetime) -> dict | None:
    """The breaker's change after a call ends (`failed`: a retryable failure), or None."""
    breaker = breaker_of(document)
    state = breaker["state"]
    if state == "half_open" and breaker["trial"] == holder:
        if failed:
            return {"$set": {"breaker": {**breaker, "state": "open", "opened_at": now, "trial": None,
                                         "trial_expires": None, "failures": breaker["failures"] + 1}}}
        return {"$set": {"breaker": dict(CLOSED)}}
    if state != "closed":
        return None  # a call admitted before the breaker opened: the trial decides, not it
    if failed:
        failures = breaker["failures"] + 1
        if failures >= limits.threshold:
            return {"$set": {"breaker": {**breaker, "state": "open", "opened_at": now, "failures": failures}}}
        return {"$set": {"breaker": {**breaker, "failures": failures}}}
    if breaker["failures"]:
        return {"$set": {"breaker": dict(CLOSED)}}
    return None


# -- the gate every call to a limited service goes through --------------------------------------

class Held(Exception):
    """A call not admitted within the wait: its step queues, due again at `due`."""

    def __init__(self, service: str, kind: str, message: str, due: datetime):
        super().__init__(message)
        self.service, self.kind, self.message, self.due = service, kind, message, due
        self.since: datetime | None = None  # when the step was first queued, if it already was

    def note(self, step: Any) -> dict:
        """What the event shows while its step is queued."""
        return {"service": self.service, "why": self.kind, "message": f"queued: {self.message}", "step": step,
                "since": self.since or utcnow(), "until": self.due}


class Ticket:
    __slots__ = ("limits", "holder", "slot", "trial", "failures")

    def __init__(self, limits: Limits, holder: str, admission: Admission):
        self.limits, self.holder = limits, holder
        self.slot = limits.max_concurrency is not None
        self.trial, self.failures = admission.trial, admission.failures


class Flow:
    """This process's side of flow control: admits calls, releases them, renews their leases."""

    def __init__(self, store, config: Mapping[str, Any]):
        self.store = store
        self.lease_s = float(config.get("LEASE_S", 30.0))
        self.wait_s = float(config.get("FLOW_WAIT_S", DEFAULT_WAIT_S))
        self._prefix = os.urandom(6).hex()
        self._count = 0
        self._lock = threading.Lock()
        self._ended: dict[str, threading.Condition] = {}  # per service: a call of this process ended
        self._holding: dict[str, tuple[str, float]] = {}  # holder -> (service, when admitted, monotonic)
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()

    def _holder(self) -> str:
        with self._lock:
            self._count += 1
            return f"{self._prefix}x{self._count:x}"

    def _condition(self, name: str) -> threading.Condition:
        with self._lock:
            condition = self._ended.get(name)
            if condition is None:
                condition = self._ended[name] = threading.Condition()
            return condition

    def through(self, limits: Limits, call: Callable[[], T], event: dict | None = None) -> T:
        """Make `call` once admitted; release its slot and tell the breaker how it went. Raises Held
        when it is not admitted within MACHINERY_FLOW_WAIT_S."""
        try:
            ticket = self.admit(limits)
        except Held as held:
            held.since = ((event or {}).get("queued") or {}).get("since")
            raise
        if event is not None and event.get("queued"):
            self._unqueue(event)
        failed = True  # no reply, as far as the breaker can tell, until one comes
        try:
            result = call()
            failed = False
            return result
        except ServiceCallError as error:
            failed = error.retryable
            raise
        finally:
            self.release(ticket, failed)

    def admit(self, limits: Limits) -> Ticket:
        holder = self._holder()
        deadline = time.monotonic() + self.wait_s
        condition = self._condition(limits.name)
        while True:
            admission, decided = self.store.flow.change(
                limits.name, lambda document: admit(document, limits, holder, utcnow(), self.lease_s))
            if decided and admission.granted:
                ticket = Ticket(limits, holder, admission)
                if ticket.slot or ticket.trial:
                    self._hold(limits.name, holder)
                return ticket
            wait = admission.retry_in_s if decided else SLOT_POLL_S * random.uniform(0.5, 1.5)
            left = deadline - time.monotonic()
            if wait > left:
                kind = admission.kind or "max_concurrency"
                if kind == "max_concurrency":
                    wait = REQUEUE_SLOT_S
                due = utcnow() + timedelta(seconds=wait * random.uniform(1.0, 1.2) + 0.01)
                raise Held(limits.name, kind, admission.message or f"service {limits.name} contended", due)
            with condition:
                condition.wait(wait)

    def release(self, ticket: Ticket, failed: bool) -> None:
        limits = ticket.limits
        try:
            if ticket.slot:
                self.store.flow.release(limits.name, ticket.holder)
            if limits.threshold is not None and (failed or ticket.trial or ticket.failures):
                now = utcnow()
                self.store.flow.change(limits.name,
                                       lambda document: (after_call(document, limits, ticket.holder, failed, now),
                                                         None))
        except Exception as error:  # the lease ends the slot anyway; the call's own outcome stands
            LOG.warning("service %s: flow state not updated after a call: %s", limits.name, error)
        finally:
            with self._lock:
                self._holding.pop(ticket.holder, None)
            condition = self._condition(limits.name)
            with condition:
                condition.notify_all()

    def _unqueue(self, event: dict) -> None:
        """The queued step of this event is admitted: the event no longer says it is queued."""
        if event.pop("queued", None) is None:
            return
        try:
            self.store.update_event(event["event_id"], {"$unset": {"queued": ""}})
        except Exception as error:
            LOG.warning("event %s: its queued note stays: %s", event.get("event_id"), error)

    # -- leases ---------------------------------------------------------------------------

    def _hold(self, name: str, holder: str) -> None:
        with self._lock:
            self._holding[holder] = (name, time.monotonic())
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew, name="machinery-flow-leases", daemon=True)
                self._renewer.start()

    def _renew(self) -> None:
        """Every third of a lease, renew the slots (and trial calls) held for longer than that."""
        while not self._stop.wait(self.lease_s / 3):
            cutoff = time.monotonic() - self.lease_s / 3
            by_service: dict[str, list[str]] = {}
            with self._lock:
                for holder, (name, since) in self._holding.items():
                    if since <= cutoff:
                        by_service.setdefault(name, []).append(holder)
            for name, holders in by_service.items():
                try:
                    self.store.flow.renew(name, holders, utcnow() + timedelta(seconds=self.lease_s))
                except Exception as error:
                    LOG.warning("service %s: call leases not renewed: %s", name, error)


    def stop(self) -> None:
        """Stop renewing leases (the process is stopping: what it still holds expires by itself)."""
        self._stop.set()


# -- what the API, the UI and the metrics show ------------------------------------------------

def show_states(store, services: list[dict]) -> None:
    """Put its flow state in each limited service among `services` (one store read for them all)."""
    limited = [service for service in services if limits_of(service) is not None]
    if limited:
        documents = store.flow.states(service["name"] for service in limited)
        for service in limited:
            service["flow"] = state_of(documents.get(service["name"]), service)


def states_shown(store) -> dict[str, dict]:
    """The flow state of every service that has a flow document, as its registered definition limits it."""
    documents = store.flow.states()
    services = store.find_services(documents) if documents else {}
    return {name: state_of(documents[name], service) for name, service in sorted(services.items())
            if limits_of(service) is not None}


def state_of(document: Mapping[str, Any] | None, service: Mapping[str, Any], now: datetime | None = None) -> dict:
    """A service's flow state as shown: calls in flight, tokens left, the breaker."""
    limits = limits_of(service)
    now = now or utcnow()
    shown: dict[str, Any] = {}
    if limits is None:
        return shown
    if limits.max_concurrency is not None:
        holders = (document or {}).get("holders") or {}
        shown["in_flight"] = sum(1 for expires in holders.values() if naive_utc(expires) > now)
        shown["max_concurrency"] = limits.max_concurrency
    if limits.per_s is not None:
        shown["tokens"] = round(tokens_now(document, limits, now), 3)
    if limits.threshold is not None:
        breaker = breaker_of(document)
        shown["breaker"] = {"state": breaker["state"], "failures": breaker["failures"],
                            "opened_at": breaker["opened_at"], "failure_threshold": limits.threshold,
                            "cool_down_s": limits.cool_down_s}
    return shown
