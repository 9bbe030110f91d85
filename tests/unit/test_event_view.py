"""The event page's timeline in lanes, and a tree event's progress summary, computed without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from machinery.event_view import MAX_LANES, lanes, summary, timeline

START = datetime(2026, 1, 1, tzinfo=UTC)


def record(instance: str, start_ms: float, length_ms: float, status: str = "completed") -> dict:
    return {"instance": instance, "status": status, "started_at": START + timedelta(milliseconds=start_ms),
            "finished_at": START + timedelta(milliseconds=start_ms + length_ms), "duration_ms": length_ms}


def event(*records: dict, end_ms: float = 1000) -> dict:
    return {"status": "completed", "ack_date": START, "finished_at": START + timedelta(milliseconds=end_ms),
            "steps": list(records)}


def placed(rows):
    return [[bar["record"]["instance"] for bar in row] for row in rows]


def test_runs_one_after_another_share_one_lane():
    drawn = timeline(event(record("a", 0, 100), record("b", 100, 200), record("c", 400, 100)))
    rows, folded = lanes(drawn["bars"])
    assert placed(rows) == [["a", "b", "c"]] and folded == 0


def test_runs_at_once_go_to_lanes_of_their_own_and_reuse_the_first_lane_free():
    drawn = timeline(event(record("split", 0, 100), record("mail", 100, 500), record("sms", 120, 200),
                           record("push", 130, 100), record("late", 330, 100), record("end", 600, 100)))
    rows, folded = lanes(drawn["bars"])
    # late starts once sms and push have ended: the first lane free at its start is sms's (lane 2).
    assert placed(rows) == [["split", "mail", "end"], ["sms", "late"], ["push"]] and folded == 0


@pytest.mark.parametrize("count", [1, 5, 40])
def test_no_two_bars_of_a_lane_overlap_and_lanes_are_as_few_as_the_most_at_once(count):
    drawn = timeline(event(*[record(f"m[{n}]", n * 7 % 50, 300 + n * 13 % 200) for n in range(count)],
                           end_ms=1000))
    rows, folded = lanes(drawn["bars"], limit=1000)
    for row in rows:
        for before, after in zip(row, row[1:], strict=False):
            assert before["left"] + before["width"] <= after["left"]
    points = sorted({bar["left"] for bar in drawn["bars"]})
    deepest = max(sum(bar["left"] <= point < bar["left"] + bar["width"] for bar in drawn["bars"]) for point in points)
    assert len(rows) == deepest and folded == 0


def test_more_than_the_cap_at_once_are_folded_and_counted():
    drawn = timeline(event(*[record(f"m[{n}]", 10, 500) for n in range(MAX_LANES + 8)]))
    rows, folded = lanes(drawn["bars"])
    assert len(rows) == MAX_LANES and folded == 8
    assert sum(len(row) for row in rows) + folded == MAX_LANES + 8


def test_a_running_step_is_drawn_up_to_now():
    now = START + timedelta(milliseconds=800)
    running = {"instance": "slow", "status": "running", "started_at": START + timedelta(milliseconds=200)}
    drawn = timeline({"status": "running", "ack_date": START, "steps": [running]}, now=now)
    (bar,) = drawn["bars"]
    assert bar["left"] == 25.0 and bar["width"] == 75.0 and bar["ms"] == 600


PLAN = {"version": 2, "tree": [
    {"id": "big", "kind": "if", "if": "total > `500`", "then": [{"id": "fraud", "kind": "call"}], "else": []},
    {"id": "route", "kind": "switch", "cases": [{"when": "a", "steps": []}, {"when": "b", "steps": []}],
     "default": []},
    {"id": "reserve", "kind": "map", "map": "lines", "max_concurrency": 8, "steps": [
        {"id": "small", "kind": "if", "if": "qty < `2`", "then": [], "else": []}]},
]}


def test_the_summary_names_each_maps_progress_and_each_branch_taken():
    progress = {"big": {"n": 1, "done": 1, "taken": {"then": 1}}, "route": {"n": 1, "taken": {"1": 1}},
                "reserve": {"n": 4, "done": 2, "failed": 1, "running": 1},
                "small": {"n": 4, "taken": {"then": 3, "else": 1}}}
    shown = summary(PLAN, progress)
    assert shown["maps"] == [{"id": "reserve", "over": "lines", "n": 4, "done": 2, "failed": 1, "running": 1,
                              "max_concurrency": 8, "percent": 75.0}]
    taken = {decision["id"]: decision["taken"] for decision in shown["decisions"]}
    assert taken == {"big": [("then", "then", 1)], "route": [("1", "when b", 1)],
                     "small": [("then", "then", 3), ("else", "else", 1)]}


def test_the_summary_of_an_event_not_started_takes_no_branch():
    shown = summary(PLAN, {})
    assert shown["maps"][0]["n"] == 0 and shown["maps"][0]["percent"] is None
    assert all(decision["taken"] == [] for decision in shown["decisions"])
