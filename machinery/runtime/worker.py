"""Claim and run pending events in threads; renew the leases of what is held; deliver completion webhooks."""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import os
import socket
import threading
import time
import uuid
from datetime import timedelta
from typing import Any, Callable, Mapping

from machinery import guard
from machinery.events import for_display
from machinery.exceptions import StoreUnavailable, TooLarge
from machinery.runtime.executor import Executor, backoff_delay, log_fields
from machinery.runtime.scheduler import Scheduler
from machinery.runtime.transport import CallFailed, Pool, thread_pool
from machinery.schemas import event_schema, to_json
from machinery.store import Store, utcnow

LOG = logging.getLogger(__name__)
WEBHOOK_TIMEOUT_S = 10.0
WEBHOOK_BACKOFF_S = 1.0
SCAN_SHARE = 10  # an idle embedded worker waits at least this many times a scan's cost between scans
SWEEP_EVERY_S = 60.0  # how often an idle worker looks for the files of removed events
IDLE_MAX_S = 1.0  # the longest an idle worker thread waits between looks at the store (jittered)


def process_owner() -> str:
    """A name for this process that no other process shares, for leases."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class LeaseKeeper:
    """Renews, every third of a lease, the leases of every event this process holds."""

    def __init__(self, store: Store, lease_s: float):
        self.store = store
        self.lease_s = lease_s
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, event_id: str, owner: str) -> None:
        with self._lock:
            self._held[event_id] = owner
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="machinery-leases", daemon=True)
                self._thread.start()

    def drop(self, event_id: str) -> None:
        with self._lock:
            self._held.pop(event_id, None)

    def held(self) -> dict[str, str]:
        with self._lock:
            return dict(self._held)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            by_owner: dict[str, list[str]] = {}
            for event_id, owner in self.held().items():
                by_owner.setdefault(owner, []).append(event_id)
            for owner, ids in by_owner.items():
                try:
                    self.store.renew_leases(owner, ids, self.lease_s)
                except StoreUnavailable as error:
                    LOG.warning("could not renew leases: %s", error.message)

    def stop(self) -> None:
        self._stop.set()


def sign(body: bytes, secret: str) -> str:
    """The X-Machinery-Signature of a webhook body: sha256=<hex HMAC-SHA256>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver_webhook(store: Store, event: Mapping[str, Any], config: Mapping[str, Any], owner: str,
                    connections: Callable[[], Pool] = thread_pool) -> str:
    """POST an ended event's record to its callback_url once; record the attempt; return the webhook status."""
    body = to_json(event_schema.dump(for_display(event, store)))
    headers = {"Content-Type": "application/json", "X-Machinery-Event": event["event_id"]}
    if config.get("WEBHOOK_SECRET"):
        headers["X-Machinery-Signature"] = sign(body, config["WEBHOOK_SECRET"])
    attempts = list((event.get("webhook") or {}).get("attempts") or [])
    entry: dict[str, Any] = {"attempt": len(attempts) + 1, "at": utcnow()}
    # Checked at delivery too: a host taken off MACHINERY_ALLOWED_HOSTS after the event was sent is not called.
    refused = guard.refusal(event["callback_url"], config.get("ALLOWED_HOSTS"))
    ok = False
    if refused:
        entry["error"] = f"forbidden_host: {refused}"
    else:
        try:
            # stream=True and no read: the receiver's reply body is never downloaded, however large or slow;
            # the Deadline ends a receiver that trickles its headers.
            with guard.Deadline(WEBHOOK_TIMEOUT_S) as cutoff:
                reply = connections().post(event["callback_url"], body, headers,
                                           connect_timeout=WEBHOOK_TIMEOUT_S, read_timeout=WEBHOOK_TIMEOUT_S)
                reply.close()
            entry["status"] = reply.status
            ok = 200 <= reply.status < 300 and not cutoff.fired
        except CallFailed as error:
            entry["error"] = "timeout" if error.kind == "timeout" or cutoff.fired else error.message
    max_attempts = config.get("WEBHOOK_MAX_ATTEMPTS", 5)
    if ok:
        status, next_at = "delivered", None
    elif refused or entry["attempt"] >= max_attempts:
        status, next_at = "failed", None
    else:
        status = "pending"
        next_at = utcnow() + timedelta(seconds=backoff_delay(entry["attempt"], WEBHOOK_BACKOFF_S))
    try:
        store.update_event(event["event_id"], {
            "$set": {"webhook.status": status, "webhook.next_at": next_at, "webhook.owner": None},
            "$push": {"webhook.attempts": entry},
        }, expect={"webhook.owner": owner})
    except TooLarge:
        # No room left in the record to note the attempt: end the webhook with a write that makes it
        # smaller, rather than leave it to be delivered again and again.
        status = "delivered" if ok else "failed"
        LOG.error("event %s: its record has no room left to note a webhook attempt; webhook %s",
                  event["event_id"], status, extra=log_fields(event))
        store.update_event(event["event_id"], {"$set": {
            "webhook.status": status, "webhook.next_at": None, "webhook.owner": None}},
            expect={"webhook.owner": owner})
    return status


class Worker:
    """Threads that claim events, run them with the executor, and deliver completion webhooks."""

    def __init__(self, store: Store, executor: Executor, keeper: LeaseKeeper, config: Mapping[str, Any],
                 threads: int, name: str = "worker", max_idle_s: float | None = None):
        """`max_idle_s`: while nothing is found, the wait between looks doubles from POLL_S up to this;
        for workers that are told of every new piece of work by wake() (the embedded store's)."""
        self.store = store
        self.executor = executor
        self.keeper = keeper
        self.config = config
        self.size = threads
        self.name = name
        self.max_idle_s = max_idle_s
        self.owner = process_owner()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._hints: collections.deque[str] = collections.deque()  # events made claimable in this process
        self._scan_requested = False
        self._next_scan = 0.0
        self._threads: list[threading.Thread] = []
        self.ran = 0
        self.scheduler = Scheduler(store, config)  # fires the ticks of due schedules, one look per loop
        self.bulk = None  # the BulkRunner applying bulk jobs, once started
        self.sweep_every_s = SWEEP_EVERY_S  # the values sweeper's pace (tests make it 0)
        self._next_sweep = 0.0

    def start(self) -> Worker:
        for number in range(self.size):
            thread = threading.Thread(target=self._loop, args=(f"{self.owner}/{self.name}-{number}",),
                                      name=f"machinery-{self.name}-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        from machinery.runtime.bulk import BulkRunner

        self.bulk = BulkRunner(self.store, self.config, f"{self.owner}/{self.name}-bulk", self.wake,
                               observer=self.executor.observer).start()
        LOG.info("%s: %d threads claiming events as %s", self.name, self.size, self.owner)
        return self

    def wake(self, event_id: str | None = None) -> None:
        """Look for work now rather than at the next poll: the event `event_id`, or anything due."""
        if event_id is None:
            self._scan_requested = True
        else:
            self._hints.append(event_id)
        self._wake.set()

    def _loop(self, owner: str) -> None:
        """Claim and run until stopped. An idle thread polls less and less often, doubling its wait
        from MACHINERY_POLL_S up to IDLE_MAX_S (or the max_idle_s given), and each wait is jittered
        (half to all of it), so that idle threads of many processes spread their claims over time
        rather than ask the store together. Work found, or a wake-up, brings it back to POLL_S."""
        import random

        from machinery.exceptions import StoreRefused

        lease_s, poll_s = self.config["LEASE_S"], self.config["POLL_S"]
        bound = max(self.max_idle_s or IDLE_MAX_S, poll_s)
        try:
            self.store.check_clock(lease_s / 3)  # once per store: warns when leases would be misjudged
        except Exception as error:  # the store may not answer yet: the loop below says so
            LOG.debug("%s: clock not checked: %s", owner, error)
        idle = poll_s
        while not self._stop.is_set():
            self._wake.clear()  # before looking, so a wake-up that comes meanwhile is not lost
            try:
                worked = self.work_once(owner, lease_s)
            except StoreUnavailable as error:
                LOG.warning("%s: store unavailable: %s", owner, error.message)
                worked = False
            except StoreRefused:  # logged once by the store, with the server's code and message
                worked = False
            except Exception:  # a bug must not kill the thread: log it and keep claiming
                LOG.exception("%s: unexpected error", owner)
                worked = False
            if worked:
                idle = poll_s
            elif self._wake.wait(idle * random.uniform(0.5, 1.0)):
                idle = poll_s
            else:
                idle = min(idle * 2, bound)

    def work_once(self, owner: str, lease_s: float) -> bool:
        """Fire a due schedule's tick, then run one claimed event or deliver one webhook; False when
        there was nothing to do."""
        scheduled = self.scheduler.look(owner)
        if isinstance(scheduled, str):
            self._hints.append(scheduled)  # the tick's event, run here at once
        event = self._claim_hinted(owner, lease_s)
        if event is None and self._scan_due():
            started = time.monotonic()
            event = self.store.claim_event(owner, lease_s)
            if event is None:
                webhook = self.store.claim_webhook(owner, WEBHOOK_TIMEOUT_S * 3)
                if webhook is not None:
                    deliver_webhook(self.store, webhook, self.config, owner)
                    return True
                # The store had nothing due. A scan of a large embedded store is slow (it has no
                # indexes): space the next one so that scanning takes at most a tenth of the time.
                cost = time.monotonic() - started
                self._next_scan = time.monotonic() + max(self.max_idle_s or 0.0, SCAN_SHARE * cost)
                self._sweep_values()
        if event is None:
            return bool(scheduled)
        self.keeper.hold(event["event_id"], owner)
        try:
            ended = self.executor.run(event, owner)
            self.ran += 1
        finally:
            self.keeper.drop(event["event_id"])
        LOG.info("event %s %s", event["event_id"], ended["status"],
                 extra={**log_fields(event), "status": ended["status"]})
        return True

    def _sweep_values(self) -> None:
        """Now and then, when idle: one bounded pass deleting the files of events no longer stored
        (MACHINERY_EVENT_TTL_DAYS removed them), so that retention leaves no large value behind."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.sweep_every_s
        removed = self.store.sweep_values()
        if removed:
            LOG.info("%s: removed %d stored values of events no longer kept", self.name, removed)

    def _claim_hinted(self, owner: str, lease_s: float) -> dict | None:
        """Claim an event this process said was ready, by its id (no scan of the store)."""
        while True:
            try:
                event_id = self._hints.popleft()
            except IndexError:
                return None
            event = self.store.claim_event(owner, lease_s, event_id=event_id)
            if event is not None:
                return event

    def _scan_due(self) -> bool:
        """Whether to look through the whole store for work. Always for workers that are not told of
        new work (max_idle_s unset); for the others, when asked, or when time alone may have made
        something due (an expired lease, a callback deadline, a webhook retry)."""
        if self.max_idle_s is None or self._scan_requested or time.monotonic() >= self._next_scan:
            self._scan_requested = False
            return True
        return False

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop claiming; let running events finish for up to `grace_s`, then release what is still held."""
        self._stop.set()
        self._wake.set()
        if self.bulk is not None:
            self.bulk.stop(grace_s)
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for event_id, owner in self.keeper.held().items():
            if owner.startswith(f"{self.owner}/{self.name}-"):
                if self.store.release_event(event_id, owner):
                    LOG.warning("%s: released event %s unfinished; another worker resumes it", owner, event_id)
                self.keeper.drop(event_id)
        LOG.info("%s stopped after running %d events", self.name, self.ran)
