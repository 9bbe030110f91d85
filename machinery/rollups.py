"""The dashboard's numbers, kept as rollups rather than counted from the events at each view.

Every process counts what ends in it, in memory: per workflow and per five-minute bucket, how many
events ended and how (completed, failed, cancelled), a histogram of their durations, and per step
how many runs ended, how many failed, their total and longest time. Every FLUSH_S seconds (and
before this process draws the dashboard) it adds what it counted to the store with one `$inc`
upsert per bucket and workflow: a write per flush, never a write per step or per event. Several
processes add to the same documents, so the figures are the sum over all of them. What a process
counted in its last FLUSH_S seconds before it was killed is lost: the dashboard is a view, the
events stay the record.

A bucket document:

    {"_id": "<workflow>|<bucket start, ISO>", "workflow": ..., "bucket": <datetime>, "n": 12,
     "completed": 11, "failed": 1, "h": {"<bin>": <count>, ...},
     "steps": {"<step id>": {"service": ..., "n": 12, "failed": 1, "ms": 420.5, "max_ms": 80.1}}}

Durations go into logarithmic bins (each BIN_RATIO wider than the one before), so p50 and p95 read
from merged buckets are within that ratio of the truth. Buckets expire after RETAIN_S (a TTL index
on `bucket`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, Callable, Iterable, Mapping

from machinery.clock import EPOCH, floor, naive_utc

LOG = logging.getLogger(__name__)

BUCKET_S = 300
FLUSH_S = 2.0
IDLE_STOP_S = 30.0  # the flushing thread ends after this long with nothing to flush, and starts again when needed
RETAIN_S = 3 * 24 * 3600
BIN_RATIO = 1.2
MAX_BIN = 120  # 1.2 ** 120 ms is past a year
STEP_COUNTERS = ("n", "failed", "ms", "max_ms", "service")  # a step's fields in a bucket: steps.<id>.<name>
MAX_STEP_KEYS = 4096  # step ids whose counter names are kept made
ENDINGS = ("completed", "failed", "cancelled")


def bucket_of(when: datetime) -> datetime:
    """The start of the five-minute bucket `when` falls in, as a naive UTC datetime (as the store keeps dates)."""
    return floor(when, BUCKET_S)


_current: tuple[int, datetime] = (-1, EPOCH)


def current_bucket() -> datetime:
    """bucket_of(now), worked out once per bucket rather than at every step that ends."""
    global _current
    seconds = int(time.time())
    start, bucket = _current
    if not start <= seconds < start + BUCKET_S:
        start = seconds - seconds % BUCKET_S
        bucket = EPOCH + timedelta(seconds=start)
        _current = (start, bucket)
    return bucket


def duration_bin(ms: float) -> int:
    """The histogram bin of a duration: 0 holds everything up to 1 ms, bin k up to BIN_RATIO ** k ms."""
    if ms <= 1.0:
        return 0
    return min(MAX_BIN, math.ceil(math.log(ms) / math.log(BIN_RATIO)))


def bin_value(index: int) -> float:
    """A bin's representative duration in ms: the geometric middle of its bounds."""
    if index <= 0:
        return 1.0
    return BIN_RATIO ** (index - 0.5)


def percentile(histogram: Mapping[str, int] | Mapping[int, int], fraction: float) -> float | None:
    """The duration (ms) below which `fraction` of the histogram's counts fall; None when it is empty."""
    counts = sorted((int(key), value) for key, value in histogram.items() if value)
    total = sum(value for _key, value in counts)
    if not total:
        return None
    rank = fraction * total
    seen = 0
    for index, value in counts:
        seen += value
        if seen >= rank:
            return round(bin_value(index), 3)
    return round(bin_value(counts[-1][0]), 3)


def event_duration_ms(event: Mapping[str, Any], finished: datetime) -> float | None:
    """How long an event took from its acknowledgement to `finished`, in ms."""
    started = event.get("ack_date")
    if not isinstance(started, datetime):
        return None
    if (started.tzinfo is None) != (finished.tzinfo is None):
        started = naive_utc(started) if finished.tzinfo is None else started.replace(tzinfo=UTC)
    return max(0.0, (finished - started).total_seconds() * 1000)


class Recorder:
    """Counts in memory what ends in this process, and adds it to the store's rollups now and then."""

    def __init__(self, store, flush_s: float = FLUSH_S):
        self.store = store
        self.flush_s = flush_s
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending: dict[tuple[str, datetime], dict] = {}
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._stopped = threading.Event()
        self._keys: dict[str, tuple[str, ...]] = {}  # a step id's counter names, made once

    def _bucket(self, workflow: str, when: datetime | None) -> dict:
        key = (workflow, current_bucket() if when is None else bucket_of(when))
        entry = self._pending.get(key)
        if entry is None:
            entry = self._pending[key] = {"inc": defaultdict(int), "max": {}, "services": {}}
        return entry

    def event_finished(self, workflow: str, status: str, duration_ms: float | None,
                       when: datetime | None = None) -> None:
        if not workflow or status not in ENDINGS:
            return
        with self._lock:
            entry = self._bucket(workflow, when)
            inc = entry["inc"]
            inc["n"] += 1
            inc[status] += 1
            if duration_ms is not None:
                inc[f"h.{duration_bin(duration_ms)}"] += 1
        self._wake()

    def step_finished(self, workflow: str, step: str, service: str, status: str, duration_ms: float,
                      when: datetime | None = None) -> None:
        if not workflow or not step or status == "waiting":
            return
        keys = self._keys.get(step)
        if keys is None:
            if len(self._keys) >= MAX_STEP_KEYS:  # a bound, however many step ids come and go
                self._keys.clear()
            keys = self._keys[step] = tuple(f"steps.{step}.{name}" for name in STEP_COUNTERS)
        count, failed, ms, longest, served = keys
        with self._lock:
            entry = self._bucket(workflow, when)
            inc = entry["inc"]
            inc[count] += 1
            if status == "failed":
                inc[failed] += 1
            inc[ms] += duration_ms
            entry["max"][longest] = max(entry["max"].get(longest, 0.0), duration_ms)
            entry["services"][served] = service
        self._wake()

    def _wake(self) -> None:
        # Asked at every step that ends: the thread's own pid says it runs here (not in a forked child,
        # which has none of its parent's threads) without asking the thread, which takes a lock.
        if self._thread is not None and self._thread_pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopped.clear()
            self._thread = threading.Thread(target=self._run, name="rollups", daemon=True)
            self._thread_pid = os.getpid()
            self._thread.start()

    def _run(self) -> None:
        idle_since = time.monotonic()
        while not self._stopped.wait(self.flush_s):
            try:
                if self.flush():
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > IDLE_STOP_S:
                    with self._lock:
                        if not self._pending:
                            self._thread = None
                            return
            except Exception as error:  # the store may be down for a while: keep the counts, try again
                LOG.warning("rollups: flush failed, kept for the next one: %s", getattr(error, "message", error))

    def stop(self) -> None:
        """Flush what is counted and end the thread (at process exit)."""
        self._stopped.set()
        self.flush()

    def flush(self) -> int:
        """Add what was counted to the store; answer how many bucket documents were written."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
            entries = list(pending.items())
            for written, ((workflow, bucket), entry) in enumerate(entries):
                try:
                    self.store.add_rollup(workflow, bucket, dict(entry["inc"]), entry["max"], entry["services"])
                except Exception:
                    with self._lock:  # put back this one and those not written yet, merged with what came meanwhile
                        for (kept_workflow, kept_bucket), kept in entries[written:]:
                            self._merge_back(kept_workflow, kept_bucket, kept)
                    raise
            return len(entries)

    def _merge_back(self, workflow: str, bucket: datetime, entry: dict) -> None:
        mine = self._pending.setdefault((workflow, bucket), {"inc": defaultdict(int), "max": {}, "services": {}})
        for key, value in entry["inc"].items():
            mine["inc"][key] += value
        for key, value in entry["max"].items():
            mine["max"][key] = max(mine["max"].get(key, 0.0), value)
        mine["services"].update(entry["services"])


class RollupObserver:
    """The executor's hooks: passed on to another observer (the metrics), and counted for the dashboard.

    In a thread inside `deferred()`, the hooks are kept in a list instead, for the caller to call
    later: an API thread running a sync event tells them once its reply is sent (counted in the
    dashboard's bucket of that moment, a few milliseconds on)."""

    def __init__(self, inner, recorder: Recorder):
        self.inner = inner
        self.recorder = recorder
        self._local = threading.local()

    @contextlib.contextmanager
    def deferred(self):
        later: list[Callable[[], None]] = []
        self._local.later = later
        try:
            yield later
        finally:
            self._local.later = None

    def _tell(self, hook: Callable[..., None], *args, **kwargs) -> None:
        later = getattr(self._local, "later", None)
        if later is None:
            hook(*args, **kwargs)
        else:
            later.append(functools.partial(hook, *args, **kwargs))

    def call_attempt(self, service: str, outcome: str) -> None:
        self._tell(self.inner.call_attempt, service, outcome)

    def step_finished(self, service: str, status: str, duration_s: float, *, workflow: str = "",
                      step: str = "") -> None:
        self._tell(self._step_finished, service, status, duration_s, workflow, step)

    def _step_finished(self, service, status, duration_s, workflow, step) -> None:
        self.inner.step_finished(service, status, duration_s)
        self.recorder.step_finished(workflow, step, service, status, duration_s * 1000)

    def event_finished(self, workflow: str, status: str, *, duration_ms: float | None = None) -> None:
        self._tell(self._event_finished, workflow, status, duration_ms)

    def _event_finished(self, workflow, status, duration_ms) -> None:
        self.inner.event_finished(workflow, status)
        self.recorder.event_finished(workflow, status, duration_ms)

    def __getattr__(self, name: str):
        """Every other hook (a step queued by flow control, ...) goes to the inner observer as it is."""
        return getattr(self.inner, name)


# -- reading ------------------------------------------------------------------------------


def summarise(buckets: Iterable[Mapping[str, Any]], now: datetime, hours: int) -> dict[str, dict]:
    """Per workflow over the last `hours`: totals, success rate, p50 and p95, and a series of points
    (one per bucket for an hour, one per hour for longer) for the charts."""
    now = naive_utc(now)
    since = now - timedelta(hours=hours)
    step_s = BUCKET_S if hours <= 1 else 3600
    slots = int(hours * 3600 // step_s)
    first = floor(now, step_s) - timedelta(seconds=step_s * (slots - 1))
    out: dict[str, dict] = {}
    for doc in buckets:
        bucket = naive_utc(doc["bucket"])
        if bucket < since - timedelta(seconds=BUCKET_S) or bucket > now:
            continue
        entry = out.setdefault(doc["workflow"], {
            "workflow": doc["workflow"], "n": 0, "completed": 0, "failed": 0, "cancelled": 0, "h": defaultdict(int),
            "series": [{"at": first + timedelta(seconds=step_s * k), "n": 0, "completed": 0, "failed": 0,
                        "h": defaultdict(int)} for k in range(slots)],
            "steps": {}})
        slot = int((floor(bucket, step_s) - first).total_seconds() // step_s)
        point = entry["series"][slot] if 0 <= slot < slots else None
        for field in ("n", *ENDINGS):
            value = int(doc.get(field, 0))
            entry[field] += value
            if point is not None and field in point:
                point[field] += value
        for key, value in (doc.get("h") or {}).items():
            entry["h"][key] += int(value)
            if point is not None:
                point["h"][key] += int(value)
        for step, stats in (doc.get("steps") or {}).items():
            mine = entry["steps"].setdefault(step, {"step": step, "service": stats.get("service"), "n": 0,
                                                    "failed": 0, "ms": 0.0, "max_ms": 0.0})
            mine["n"] += int(stats.get("n", 0))
            mine["failed"] += int(stats.get("failed", 0))
            mine["ms"] += float(stats.get("ms", 0.0))
            mine["max_ms"] = max(mine["max_ms"], float(stats.get("max_ms", 0.0)))
    for entry in out.values():
        entry["success_rate"] = entry["completed"] / entry["n"] if entry["n"] else None
        entry["p50_ms"] = percentile(entry["h"], 0.5)
        entry["p95_ms"] = percentile(entry["h"], 0.95)
        for point in entry["series"]:
            point["per_minute"] = point["n"] / (step_s / 60)
            point["success_rate"] = point["completed"] / point["n"] if point["n"] else None
            point["p50_ms"] = percentile(point["h"], 0.5)
            point["p95_ms"] = percentile(point["h"], 0.95)
        for stats in entry["steps"].values():
            stats["mean_ms"] = stats["ms"] / stats["n"] if stats["n"] else 0.0
            stats["failure_rate"] = stats["failed"] / stats["n"] if stats["n"] else 0.0
    return out
