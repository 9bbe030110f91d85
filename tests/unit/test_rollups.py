"""The dashboard's rollups: buckets, duration bins and percentiles, the in-memory counts and their flush."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from machinery import rollups
from machinery.store import Store


@pytest.fixture
def store():
    return Store.connect(f"mongomock://localhost/rollups-{random.random()}")


def test_buckets_start_on_five_minute_boundaries():
    assert rollups.bucket_of(datetime(2026, 1, 2, 3, 7, 59, tzinfo=UTC)) == datetime(2026, 1, 2, 3, 5)
    assert rollups.bucket_of(datetime(2026, 1, 2, 3, 10)) == datetime(2026, 1, 2, 3, 10)


def test_percentiles_from_the_bins_are_within_the_bin_ratio():
    rng = random.Random(7)
    durations = [rng.lognormvariate(4, 1) for _ in range(5000)]
    histogram: dict[str, int] = {}
    for ms in durations:
        key = str(rollups.duration_bin(ms))
        histogram[key] = histogram.get(key, 0) + 1
    for fraction in (0.5, 0.95):
        truth = statistics.quantiles(durations, n=100)[int(fraction * 100) - 1]
        estimate = rollups.percentile(histogram, fraction)
        assert truth / rollups.BIN_RATIO <= estimate <= truth * rollups.BIN_RATIO, (fraction, truth, estimate)
    assert rollups.percentile({}, 0.5) is None


def test_counts_are_kept_in_memory_and_flushed_as_one_write_per_bucket(store):
    recorder = rollups.Recorder(store, flush_s=3600)
    when = datetime(2026, 5, 1, 12, 1, tzinfo=UTC)
    writes = store.writes
    for index in range(50):
        status = "failed" if index % 10 == 0 else "completed"
        recorder.step_finished("orders", "reserve", "stock", status, 20.0 + index, when=when)
        recorder.event_finished("orders", status, 100.0, when=when)
    recorder.event_finished("orders", "completed", 100.0, when=when + timedelta(minutes=5))
    assert store.writes == writes  # nothing written yet
    assert recorder.flush() == 2
    assert store.writes == writes + 2
    docs = store.rollups_since(datetime(2026, 5, 1))
    docs.sort(key=lambda doc: doc["bucket"])
    assert [doc["bucket"] for doc in docs] == [datetime(2026, 5, 1, 12, 0), datetime(2026, 5, 1, 12, 5)]
    first = docs[0]
    assert (first["n"], first["completed"], first["failed"]) == (50, 45, 5)
    assert first["steps"]["reserve"]["n"] == 50 and first["steps"]["reserve"]["failed"] == 5
    assert first["steps"]["reserve"]["max_ms"] == 69.0
    assert first["steps"]["reserve"]["service"] == "stock"
    assert recorder.flush() == 0


def test_several_processes_add_up(store):
    when = datetime(2026, 5, 1, 12, 1, tzinfo=UTC)
    one, two = rollups.Recorder(store, flush_s=3600), rollups.Recorder(store, flush_s=3600)
    for recorder, count in ((one, 3), (two, 4)):
        for _ in range(count):
            recorder.event_finished("orders", "completed", 10.0, when=when)
        recorder.step_finished("orders", "reserve", "stock", "completed", float(count * 10), when=when)
        recorder.flush()
    [doc] = store.rollups_since(datetime(2026, 5, 1))
    assert doc["n"] == 7
    assert doc["steps"]["reserve"]["n"] == 2 and doc["steps"]["reserve"]["max_ms"] == 40.0


def test_a_failed_flush_keeps_the_counts_for_the_next(store, monkeypatch):
    recorder = rollups.Recorder(store, flush_s=3600)
    when = datetime(2026, 5, 1, 12, 1, tzinfo=UTC)
    recorder.event_finished("orders", "completed", 10.0, when=when)

    def down(*_args, **_kwargs):
        raise RuntimeError("store down")

    monkeypatch.setattr(store, "add_rollup", down)
    with pytest.raises(RuntimeError):
        recorder.flush()
    recorder.event_finished("orders", "failed", 10.0, when=when)
    monkeypatch.undo()
    assert recorder.flush() == 1
    [doc] = store.rollups_since(datetime(2026, 5, 1))
    assert (doc["n"], doc["completed"], doc["failed"]) == (2, 1, 1)


def test_a_failed_flush_keeps_every_bucket_it_had_not_written(store, monkeypatch):
    recorder = rollups.Recorder(store, flush_s=3600)
    when = datetime(2026, 5, 1, 12, 1, tzinfo=UTC)
    for workflow in ("a", "b", "c"):
        recorder.event_finished(workflow, "completed", 10.0, when=when)
    writes = []

    def down_after_one(workflow, *args):
        if writes:
            raise RuntimeError("store down")
        writes.append(workflow)
        return original(workflow, *args)

    original = store.add_rollup
    monkeypatch.setattr(store, "add_rollup", down_after_one)
    with pytest.raises(RuntimeError):
        recorder.flush()
    monkeypatch.undo()
    assert recorder.flush() == 2
    docs = store.rollups_since(datetime(2026, 5, 1))
    assert sorted((doc["workflow"], doc["n"]) for doc in docs) == [("a", 1), ("b", 1), ("c", 1)]


def test_summaries_per_hour_and_day():
    now = datetime(2026, 5, 1, 12, 2)
    docs = [
        {"workflow": "a", "bucket": datetime(2026, 5, 1, 12, 0), "n": 10, "completed": 9, "failed": 1,
         "h": {str(rollups.duration_bin(50)): 10}, "steps": {"s": {"service": "x", "n": 10, "failed": 1, "ms": 500.0,
                                                                    "max_ms": 90.0}}},
        {"workflow": "a", "bucket": datetime(2026, 5, 1, 9, 0), "n": 5, "completed": 5, "failed": 0,
         "h": {str(rollups.duration_bin(400)): 5}},
        {"workflow": "a", "bucket": datetime(2026, 4, 29, 9, 0), "n": 99, "completed": 99},  # past the day
    ]
    hour = rollups.summarise(docs, now, 1)["a"]
    assert (hour["n"], hour["completed"], hour["failed"]) == (10, 9, 1)
    assert len(hour["series"]) == 12 and hour["series"][-1]["n"] == 10
    assert hour["series"][-1]["per_minute"] == 2.0
    day = rollups.summarise(docs, now, 24)["a"]
    assert day["n"] == 15 and len(day["series"]) == 24
    assert day["series"][-1]["n"] == 10 and day["series"][-4]["n"] == 5
    assert day["success_rate"] == pytest.approx(14 / 15)
    assert 50 / rollups.BIN_RATIO <= day["p50_ms"] <= 50 * rollups.BIN_RATIO
    assert 400 / rollups.BIN_RATIO <= day["p95_ms"] <= 400 * rollups.BIN_RATIO
    assert day["steps"]["s"]["mean_ms"] == 50.0 and day["steps"]["s"]["failure_rate"] == 0.1


def test_event_duration_from_acknowledgement():
    ack = datetime(2026, 5, 1, 12, 0, 0)
    assert rollups.event_duration_ms({"ack_date": ack}, ack + timedelta(milliseconds=250)) == 250.0
    assert rollups.event_duration_ms({"ack_date": ack.replace(tzinfo=UTC)}, ack + timedelta(seconds=1)) == 1000.0
    assert rollups.event_duration_ms({}, ack) is None
