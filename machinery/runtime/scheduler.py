"""Fire the due ticks of schedules: each tick becomes one event, whichever process gets to it first."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Mapping

from machinery import metrics
from machinery.clock import aware_now, naive_utc
from machinery.events import new_event
from machinery.exceptions import MachineryError, StoreRefused, StoreUnavailable
from machinery.schedules import catch_up, timing_of
from machinery.store import ACTIVE, Store

LOG = logging.getLogger(__name__)
LOOK_S = 0.2  # a process looks for a due schedule at most this often, unless its last look found one
LOOK_SHARE = 10  # and waits at least this many times a fruitless look's cost before the next one
HOLD_S = 1.0  # a queued tick waiting for the event before it looks again after this


def idempotency_key(name: str, tick: datetime) -> str:
    """The idempotency key of a tick's event: a second try at the same tick returns the first event."""
    return f"schedule:{name}:{tick.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def _moved_on(following: datetime | None) -> dict:
    """A schedule's fields once its tick is done: its next tick, or paused when no tick follows."""
    return {"next_run": following} if following is not None else {"next_run": None, "paused": True}


class Scheduler:
    """Looks for a due schedule (one indexed query of the store), claims it with a lease, and fires its
    tick: the event is stored pending, as POST /e/<workflow>?mode=async stores it, for a worker to run.

    Exactly once across processes: only the claim's holder fires a tick, and the event carries an
    idempotency key made of the schedule and the tick, so a holder that dies between storing the event
    and moving the schedule on leaves the next holder to find that event rather than send another."""

    def __init__(self, store: Store, config: Mapping[str, Any]):
        self.store = store
        self.config = config
        self._next_look = 0.0
        self._lock = threading.Lock()
        self.fired = 0

    def look(self, owner: str) -> str | bool:
        """Handle at most one due tick: the id of the event it sent, True when it was otherwise handled
        (skipped, missed, failed, held), False when nothing was due or this process looked just now."""
        with self._lock:
            if time.monotonic() < self._next_look:
                return False
            self._next_look = time.monotonic() + LOOK_S
        started = time.monotonic()
        schedule = self.store.claim_schedule(owner, self.config["LEASE_S"])
        if schedule is None:
            # A look is one index walk on MongoDB; the embedded store has no indexes and reads every
            # schedule: space its looks so that they take at most a tenth of the time.
            cost = time.monotonic() - started
            with self._lock:
                self._next_look = max(self._next_look, time.monotonic() + LOOK_SHARE * cost)
            return False
        with self._lock:
            self._next_look = 0.0  # another may be due as well
        return self.fire(schedule, owner)

    def fire(self, schedule: Mapping[str, Any], owner: str) -> str | bool:
        """Fire the due tick of a schedule this process holds (see look)."""
        name, due = schedule["name"], schedule["next_run"]
        now = aware_now()
        timing = timing_of(schedule)
        try:
            late = catch_up(timing, due, now, schedule["catch_up"], schedule.get("caught_up_to"))
            following = timing.after(due)
        except ValueError as error:  # a cron bound to years that have passed: this tick is its last
            LOG.warning("schedule %s: no tick follows %s (%s); it is paused after this one", name, due, error)
            late, following = None, None
        if late is not None:
            tick = None
            if late.missed:
                tick = {"tick": late.missed_first, "until": late.missed_last, "result": "missed",
                        "count": late.missed, "at": now}
                LOG.warning("schedule %s: %d ticks from %s to %s were missed (catch_up %s)", name, late.missed,
                            late.missed_first, late.missed_last, schedule["catch_up"])
            self.store.advance_schedule(name, owner, due, {"next_run": late.next_run,
                                                           "caught_up_to": late.caught_up_to}, tick)
            return True
        previous = schedule.get("last_event_id")
        if previous and self.store.event_status(previous) in ACTIVE:
            if schedule["overlap"] == "queue":
                self.store.hold_schedule(name, owner, now + timedelta(seconds=HOLD_S), {"waiting_for": previous})
                return True
            self.store.advance_schedule(name, owner, due, _moved_on(following), {
                "tick": due, "result": "skipped", "at": now,
                "reason": f"the event of the tick before ({previous}) had not ended"})
            return True
        try:
            event, created = new_event(
                self.store, schedule["workflow"], {"data": schedule["data"]},
                idempotency_key=idempotency_key(name, due), lease_s=self.config["LEASE_S"],
                callback_base=schedule.get("callback_base") or self.config.get("PUBLIC_URL") or None,
                allowed_hosts=self.config.get("ALLOWED_HOSTS"),
                schedule={"name": name, "tick": naive_utc(due)})
        except (StoreUnavailable, StoreRefused):
            raise  # the tick stays due: the claim's lease expires and a later look fires it
        except MachineryError as error:
            # The workflow was deleted, or changed so that the schedule's data no longer fits it.
            LOG.warning("schedule %s: the tick of %s sent no event: %s", name, due, error.message)
            self.store.advance_schedule(name, owner, due, {**_moved_on(following), "waiting_for": None}, {
                "tick": due, "result": "failed", "at": now, "error": error.message})
            return True
        self.store.advance_schedule(
            name, owner, due, {**_moved_on(following), "last_event_id": event["event_id"], "waiting_for": None},
            {"tick": due, "result": "fired", "at": now, "event_id": event["event_id"], "by": owner.split("/")[0]})
        if not created:
            return True
        self.fired += 1
        metrics.event_received(event.get("workflow_name", schedule["workflow"]), True)
        return event["event_id"]
