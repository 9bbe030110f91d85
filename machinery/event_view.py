"""What the event page shows of an event: its step runs as bars on one time axis (in lanes when they
ran at once), its maps' progress and the branches its decisions took. No Flask, no store reads: it is
handed the event and its step records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Iterable, Mapping

from machinery.graph_tree import branches
from machinery.store import ACTIVE

MAX_LANES = 32


def timeline(event: Mapping[str, Any], records: Iterable[Mapping[str, Any]] | None = None,
             now: datetime | None = None) -> dict:
    """Bars for an event's step runs (its `steps` unless `records` are given), placed on one time axis
    from the ack date to the end (or now). Each bar's `left` and `width` are percentages of the axis."""
    records = [dict(record) for record in (event.get("steps") or [] if records is None else records)]
    if event.get("waiting"):
        records.append({**event["waiting"], "status": "waiting"})
    start = event.get("ack_date")
    now = now or datetime.now(UTC)
    ends = [event.get("finished_at") or None]
    for record in records:
        ends.append(record.get("finished_at") or (now if record["status"] == "waiting" else record.get("started_at")))
    end = max([moment for moment in ends if moment is not None] + [start]) if start else None
    if event.get("status") in ACTIVE:
        end = now
    span_ms = max((end - start).total_seconds() * 1000, 1.0) if start and end else 1.0
    bars = []
    for record in records:
        started = record.get("started_at")
        finished = record.get("finished_at")
        length = run_ms(record, now)
        offset = (started - start).total_seconds() * 1000 if started and start else 0.0
        left = min(max(offset / span_ms * 100, 0.0), 99.5)
        width = min(max(length / span_ms * 100, 0.5), 100.0 - left)
        bars.append({"record": record, "left": round(left, 3), "width": round(width, 3), "ms": length,
                     "finished": finished})
    return {"bars": bars, "span_ms": span_ms, "start": start, "end": end}


def run_ms(record: Mapping[str, Any], now: datetime) -> float:
    """How long a step run took, or has taken by `now` while it waits or runs, in milliseconds."""
    started = record.get("started_at")
    if record["status"] in ("waiting", "running") and not record.get("finished_at"):
        return (now - started).total_seconds() * 1000 if started else 0.0
    return record.get("duration_ms") or 0.0


def lanes(bars: list[dict], limit: int = MAX_LANES) -> tuple[list[list[dict]], int]:
    """Bars put in lanes so that none overlaps another of its lane, as drawn: taken in the order they
    start, each goes into the first lane free at its start (greedy interval partitioning, which uses as
    few lanes as the most bars drawn at one moment). Beyond `limit` lanes, bars are folded: the second
    value says how many."""
    rows: list[list[dict]] = []
    ends: list[float] = []
    folded = 0
    for bar in sorted(bars, key=lambda bar: (bar["left"], -bar["width"])):
        for number, end in enumerate(ends):
            if end <= bar["left"]:
                rows[number].append(bar)
                ends[number] = bar["left"] + bar["width"]
                break
        else:
            if len(rows) < limit:
                rows.append([bar])
                ends.append(bar["left"] + bar["width"])
            else:
                folded += 1
    return rows, folded


def _walk(steps: Iterable[Mapping[str, Any]]):
    for node in steps or []:
        yield node
        kind = node.get("kind")
        if kind == "map":
            yield from _walk(node.get("steps") or [])
        elif kind in ("if", "switch", "parallel"):
            for _, _, body in branches(node):
                yield from _walk(body)


def summary(plan: Mapping[str, Any], progress: Mapping[str, Any] | None) -> dict:
    """A tree event's maps with their progress (done and failed out of n), and its decisions with the
    branches they took (with how often, inside a map), in the plan's order."""
    progress = progress or {}
    maps, decisions = [], []
    for node in _walk(plan.get("tree") or []):
        entry = progress.get(node.get("id"))
        entry = entry if isinstance(entry, Mapping) else {}
        if node.get("kind") == "map":
            total = int(entry.get("n") or 0)
            done, failed = int(entry.get("done") or 0), int(entry.get("failed") or 0)
            maps.append({"id": node["id"], "over": node.get("map"), "n": total, "done": done, "failed": failed,
                         "running": int(entry.get("running") or 0), "max_concurrency": node.get("max_concurrency"),
                         "percent": round(100 * (done + failed) / total, 1) if total else None})
        elif node.get("kind") in ("if", "switch"):
            taken = entry.get("taken")
            if isinstance(taken, str):
                taken = {taken: 1}
            counts = {str(key): count for key, count in (taken or {}).items() if count} \
                if isinstance(taken, Mapping) else {}
            labels = [(name, label, counts[name]) for name, label, _ in branches(node) if name in counts]
            decisions.append({"id": node["id"], "kind": node["kind"], "taken": labels,
                              "condition": node.get("if")})
    return {"maps": maps, "decisions": decisions}
