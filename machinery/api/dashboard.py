"""The dashboard at /ui/: per workflow, events per minute, success rate, p50 and p95 over the last
hour and day as small SVG charts drawn here; the slowest and the most failing steps; the services
with their limits; the work not yet finished.

It reads the rollups (machinery/rollups.py), a few hundred small documents per workflow and day,
and counts of active events through their status index: nothing here reads the events themselves,
so the page costs the same at 1e3 stored events as at 1e6.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Iterable, Mapping

from markupsafe import Markup, escape

from machinery import rollups
from machinery.runtime import flow

TOP_STEPS = 10
SERVICES_SHOWN = 100
WIDTH, HEIGHT = 168, 40
LINE_INSET = 2.5  # a line chart's margin inside its box: half a stroke and a point's radius (CSS and `lines`)


def dashboard(runtime, now: datetime | None = None) -> dict[str, Any]:
    """What the page shows, as plain data (the template draws it)."""
    store = runtime.store
    runtime.rollups.flush()  # what this process counted, so that its own last events are in
    now = now or datetime.now(UTC)
    naive = now.astimezone(UTC).replace(tzinfo=None)
    buckets = store.rollups_since(naive - timedelta(days=1, seconds=rollups.BUCKET_S))
    hour_ago = rollups.bucket_of(naive - timedelta(hours=1))
    hour = rollups.summarise([doc for doc in buckets if doc["bucket"] >= hour_ago], naive, 1)
    day = rollups.summarise(buckets, naive, 24)
    workflows = []
    for name in sorted(day):
        last_day = day[name]
        last_hour = hour.get(name)
        workflows.append({
            "name": name, "hour": last_hour, "day": last_day,
            "per_minute_chart": bars([point["per_minute"] for point in last_hour["series"]] if last_hour else [],
                                     "events per minute, last hour"),
            "success_chart": rates([point["success_rate"] for point in last_day["series"]],
                                   "success rate per hour, last day"),
            "duration_chart": lines({"p95": [point["p95_ms"] for point in last_day["series"]],
                                     "p50": [point["p50_ms"] for point in last_day["series"]]},
                                    "p50 and p95 duration (ms), last day"),
        })
    steps = [{**stats, "workflow": name} for name, entry in day.items() for stats in entry["steps"].values()]
    services, _total = store.list_services(1, SERVICES_SHOWN)
    flow.show_states(store, services)
    queued = [{"service": service, "workflow": workflow, "why": why, "count": count}
              for (service, workflow, why), count in sorted(store.flow.queued_events().items())]
    return {
        "now": now, "workflows": workflows,
        "slowest": sorted(steps, key=lambda s: (-s["mean_ms"], s["workflow"], s["step"]))[:TOP_STEPS],
        "failing": sorted((s for s in steps if s["failed"]), key=lambda s: (-s["failed"], -s["failure_rate"],
                                                                             s["workflow"], s["step"]))[:TOP_STEPS],
        "services": [_service_row(service) for service in services],
        "active": store.pending_events_by_status(),
        "queued": queued,
    }


def _service_row(service: Mapping[str, Any]) -> dict[str, Any]:
    limits = []
    if service.get("max_concurrency"):
        limits.append(f"at most {service['max_concurrency']} in flight")
    rate = service.get("rate_limit")
    if isinstance(rate, Mapping) and rate.get("per_s"):
        limits.append(f"{rate['per_s']:g}/s, burst {rate.get('burst') or rate['per_s']:g}")
    breaker = service.get("breaker")
    return {"name": service["name"], "address": service.get("address"), "limits": limits,
            "breaker": breaker if isinstance(breaker, Mapping) else None,
            "state": service.get("flow") or {}}


def _scale(values: Iterable[float | None]) -> float:
    return max((value for value in values if value is not None), default=0.0) or 1.0


def _svg(title: str, parts: list[str]) -> Markup:
    return Markup(f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
                  f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
                  f'<line class="axis" x1="0" y1="{HEIGHT - 0.5}" x2="{WIDTH}" y2="{HEIGHT - 0.5}"/>'
                  f'{"".join(parts)}</svg>')


def _rect(css: str, index: int, width: float, top: float, height: float, label: str) -> str:
    return (f'<rect class="{css}" x="{index * width + 0.5:.1f}" y="{top:.1f}" width="{max(width - 1, 1):.1f}" '
            f'height="{height:.1f}"><title>{escape(label)}</title></rect>')


def bars(values: list[float], title: str) -> Markup:
    """A bar per value, scaled to the largest; a zero is drawn as a 1-pixel line."""
    if not values:
        return Markup("")
    scale = _scale(values)
    width = WIDTH / len(values)
    parts = []
    for index, value in enumerate(values):
        height = max(1.0, value / scale * (HEIGHT - 2)) if value else 1.0
        parts.append(_rect("bar", index, width, HEIGHT - height, height, f"{value:.3g}"))
    return _svg(title, parts)


def rates(values: list[float | None], title: str) -> Markup:
    """A full-height bar per value between 0 and 1: its share that succeeded from the bottom, the rest
    in red above it; nothing where a value is None (no event ended then)."""
    width = WIDTH / max(len(values), 1)
    parts = []
    for index, value in enumerate(values):
        if value is None:
            continue
        ok = value * (HEIGHT - 1)
        label = f"{value * 100:.1f} % ok"
        if ok:
            parts.append(_rect("bar ok", index, width, HEIGHT - 1 - ok, ok, label))
        if value < 1:
            parts.append(_rect("bar bad", index, width, 0, HEIGHT - 1 - ok, label))
    return _svg(title, parts)


def lines(series: Mapping[str, list[float | None]], title: str) -> Markup:
    """A polyline per series, broken where a value is None."""
    every = [value for values in series.values() for value in values]
    if not every:
        return Markup("")
    scale = _scale(every)
    count = max(len(values) for values in series.values())
    # The points are kept LINE_INSET inside the chart: a line's stroke and a lone point's dot drawn at
    # the first or the last minute, or at the largest value, would otherwise be cut in half by its edge.
    step = (WIDTH - 2 * LINE_INSET) / max(count - 1, 1)
    bottom = HEIGHT - 1 - LINE_INSET  # a zero, above the axis
    tall = bottom - LINE_INSET
    parts = []
    for name, values in series.items():
        run: list[str] = []
        runs = []
        for index, value in enumerate(values):
            if value is None:
                if run:
                    runs.append(run)
                run = []
                continue
            run.append(f"{LINE_INSET + index * step:.1f},{bottom - value / scale * tall:.1f}")
        if run:
            runs.append(run)
        for points in runs:
            if len(points) == 1:
                x, y = points[0].split(",")
                parts.append(f'<circle class="line {escape(name)}" cx="{x}" cy="{y}" r="2"/>')
            else:
                parts.append(f'<polyline class="line {escape(name)}" points="{" ".join(points)}"/>')
    return _svg(title, parts)
