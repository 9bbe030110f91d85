"""Schedules: a definition checked, and when its ticks fall (cron in a time zone, or every N seconds)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Mapping
from zoneinfo import ZoneInfo, available_timezones

from croniter import CroniterBadDateError, CroniterError, croniter

from machinery.events import check_data
from machinery.exceptions import InvalidData, NotFound

GRACE_S = 60.0  # a tick reached more than this after its time was missed (downtime): catch_up decides
MAX_CATCH_UP = 1000  # {"all": N} runs at most this many missed ticks
MAX_EVERY_S = 366 * 86400
MAX_CRON_LENGTH = 200
MISSED_COUNTED = 10_000  # missed cron ticks are counted up to this, then reported as at least this many
OVERLAPS = ("skip", "queue")


@dataclass(frozen=True)
class Timing:
    """When a schedule's ticks fall: a cron expression read in a time zone, or every `every_s` seconds
    counted from 1970-01-01 UTC (so every_s 3600 ticks on the hour, whenever the schedule was made)."""

    cron: str | None = None
    timezone: str = "UTC"
    every_s: int | None = None

    def after(self, moment: datetime) -> datetime:
        """The first tick strictly after `moment` (aware), in UTC."""
        if self.every_s is not None:
            seconds = int(moment.timestamp() // self.every_s + 1) * self.every_s
            return datetime.fromtimestamp(seconds, UTC)
        start = moment.astimezone(_zone(self.timezone))
        return croniter(self.cron, start).get_next(datetime).astimezone(UTC)

    def before(self, moment: datetime) -> datetime:
        """The last tick strictly before `moment` (aware), in UTC."""
        if self.every_s is not None:
            stamp = moment.timestamp()
            seconds = (int(stamp // self.every_s) - (stamp % self.every_s == 0)) * self.every_s
            return datetime.fromtimestamp(seconds, UTC)
        start = moment.astimezone(_zone(self.timezone))
        return croniter(self.cron, start).get_prev(datetime).astimezone(UTC)

    def count(self, first: datetime, last: datetime) -> int:
        """How many ticks fall from `first` to `last` (both ticks), up to MISSED_COUNTED for a cron."""
        if self.every_s is not None:
            return int((last - first).total_seconds() // self.every_s) + 1
        ticks = croniter(self.cron, first.astimezone(_zone(self.timezone)))
        counted = 1
        while counted < MISSED_COUNTED and ticks.get_next(datetime) <= last:
            counted += 1
        return counted


def timing_of(schedule: Mapping[str, Any]) -> Timing:
    return Timing(cron=schedule.get("cron"), timezone=schedule.get("timezone") or "UTC",
                  every_s=schedule.get("every_s"))


@functools.lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def catch_up_count(policy: Any) -> int:
    """How many missed ticks a catch_up policy runs: none 0, one 1, {"all": N} N."""
    if policy == "none":
        return 0
    if policy == "one":
        return 1
    return int(policy["all"])


def check_timing(definition: Mapping[str, Any], now: datetime) -> Timing:
    """The timing of a definition (its cron and timezone, or its every_s), or InvalidData naming the
    field at fault; the first tick after `now` must exist (a cron such as 30 February never fires)."""
    cron, every_s = definition.get("cron"), definition.get("every_s")
    zone = definition.get("timezone")
    if (cron is None) == (every_s is None):
        which = "both" if cron is not None else "neither"
        raise InvalidData(f"give cron or every_s, not {which}",
                          errors={"cron": [f"give cron or every_s, not {which}"]})
    if every_s is not None:
        if zone not in (None, "UTC"):
            raise InvalidData("timezone goes with cron; every_s counts seconds, which no time zone changes",
                              errors={"timezone": ["only with cron"]})
        if isinstance(every_s, bool) or not isinstance(every_s, int) or not 1 <= every_s <= MAX_EVERY_S:
            raise InvalidData(f"every_s must be a whole number of seconds from 1 to {MAX_EVERY_S}",
                              errors={"every_s": [f"not a whole number from 1 to {MAX_EVERY_S}"]})
        return Timing(every_s=every_s)
    zone = "UTC" if zone is None else zone
    if not isinstance(zone, str) or zone not in _zones():
        raise InvalidData(f"timezone {zone!r} is not an IANA time zone (such as Europe/Paris or UTC)",
                          errors={"timezone": ["not an IANA time zone name"]})
    if not isinstance(cron, str) or not 0 < len(cron) <= MAX_CRON_LENGTH:
        raise InvalidData(f"cron must be a cron expression of at most {MAX_CRON_LENGTH} characters",
                          errors={"cron": ["not a cron expression"]})
    try:
        croniter(cron)
    except (CroniterError, ValueError, TypeError, KeyError) as error:
        raise InvalidData(f"cron {cron!r} is not a cron expression: {error}",
                          errors={"cron": [f"not a cron expression: {error}"]}) from None
    timing = Timing(cron=cron, timezone=zone)
    try:
        timing.after(now)
    except (CroniterBadDateError, CroniterError, ValueError) as error:
        raise InvalidData(f"cron {cron!r} never fires: {error}", errors={"cron": ["never fires"]}) from None
    return timing


def check_catch_up(policy: Any) -> Any:
    """A catch_up policy as given ("none", "one", or {"all": N} with 1 <= N <= MAX_CATCH_UP), or InvalidData."""
    if policy in ("none", "one"):
        return policy
    if isinstance(policy, dict) and set(policy) == {"all"}:
        count = policy["all"]
        if not isinstance(count, bool) and isinstance(count, int) and 1 <= count <= MAX_CATCH_UP:
            return {"all": count}
    raise InvalidData(f'catch_up must be "none", "one" or {{"all": N}} with N from 1 to {MAX_CATCH_UP}',
                      errors={"catch_up": [f'not "none", "one" or {{"all": N}} with N from 1 to {MAX_CATCH_UP}']})


@dataclass(frozen=True)
class CatchUp:
    """What a schedule found late does: resume from `next_run`, having missed (not run) the ticks from
    `missed_first` to `missed_last` (`missed` of them; None when none was missed). Ticks before
    `caught_up_to` from `next_run` on are the ones kept to run late."""

    next_run: datetime
    caught_up_to: datetime
    missed_first: datetime | None = None
    missed_last: datetime | None = None
    missed: int = 0


def catch_up(timing: Timing, due: datetime, now: datetime, policy: Any,
             caught_up_to: datetime | None = None) -> CatchUp | None:
    """What to do with a schedule whose next tick `due` has come, at `now`. None: run it (it is on
    time: no more than GRACE_S late, or kept by an earlier catch-up). Otherwise the ticks from `due`
    to GRACE_S before now were missed: the policy keeps the last N of them to run (none, one, all up
    to N), and the rest are skipped; the ticks since then are on time and run as well."""
    cutoff = now - timedelta(seconds=GRACE_S)
    if due >= cutoff or (caught_up_to is not None and due < caught_up_to):
        return None
    last_missed = timing.before(cutoff)
    kept: list[datetime] = []
    moment = cutoff
    for _ in range(catch_up_count(policy)):
        moment = timing.before(moment)
        if moment < due:
            break
        kept.append(moment)
    resume = kept[-1] if kept else timing.after(last_missed)
    if resume <= due:
        return CatchUp(next_run=due, caught_up_to=cutoff)
    skipped_last = timing.before(resume)
    return CatchUp(next_run=resume, caught_up_to=cutoff, missed_first=due, missed_last=skipped_last,
                   missed=timing.count(due, skipped_last))


def check_definition(store: Any, definition: Mapping[str, Any], now: datetime) -> dict:
    """A schedule's definition checked whole, as stored (its next_run computed): the timing, the
    catch_up and overlap, the workflow (it must exist) and the data, checked against the workflow's
    inputs as an event's data is. InvalidData names the field at fault; nothing is written."""
    timing = check_timing(definition, now)
    overlap = definition.get("overlap", "skip")
    if overlap not in OVERLAPS:
        raise InvalidData('overlap must be "skip" or "queue"', errors={"overlap": ['not "skip" or "queue"']})
    policy = check_catch_up(definition.get("catch_up", "none"))
    ref = definition.get("workflow")
    try:
        workflow = store.get_workflow(ref) if isinstance(ref, str) and ref else None
    except NotFound:
        workflow = None
    if workflow is None:
        raise InvalidData(f"no workflow {ref!r} to schedule", errors={"workflow": ["no such workflow"]})
    data = definition.get("data", {})
    try:
        check_data(workflow, data)
    except InvalidData as error:
        raise InvalidData(f"data: {error.message}", errors={"data": error.errors}) from None
    return {
        "name": definition["name"], "workflow": ref, "data": data,
        "cron": timing.cron, "timezone": timing.timezone if timing.cron else None, "every_s": timing.every_s,
        "overlap": overlap, "catch_up": policy, "paused": bool(definition.get("paused", False)),
        "next_run": timing.after(now), "caught_up_to": None,
    }


TIMING_FIELDS = ("cron", "timezone", "every_s")
DEFINITION_FIELDS = ("name", "workflow", "data", *TIMING_FIELDS, "overlap", "catch_up", "paused")


def check_change(store: Any, stored: Mapping[str, Any], changes: Mapping[str, Any], now: datetime) -> dict:
    """The fields a change of a stored schedule sets, the whole definition checked again (InvalidData
    naming the field at fault). A cron or every_s given replaces the timing (the other is dropped unless
    given too), and a new timing moves next_run; the rest applies from the next tick."""
    merged = {key: stored[key] for key in DEFINITION_FIELDS if stored.get(key) is not None}
    if "cron" in changes or "every_s" in changes:
        for key in TIMING_FIELDS:
            merged.pop(key, None)
    merged.update({key: value for key, value in changes.items() if value is not None})
    checked = check_definition(store, merged, now)
    checked.pop("paused")  # pause and resume say that
    if all(checked[key] == stored.get(key) for key in TIMING_FIELDS):
        checked.pop("next_run")  # the same timing: its next tick stays
        checked.pop("caught_up_to")
    return checked


def resumed(schedule: Mapping[str, Any], now: datetime) -> dict:
    """The fields that resume a paused schedule: from its first tick after now (the pause's ticks are
    not caught up), or InvalidData when its cron fires no more."""
    try:
        next_run = timing_of(schedule).after(now)
    except ValueError as error:
        raise InvalidData(f"schedule {schedule['name']!r} fires no more: {error}",
                          errors={"cron": ["never fires"]}) from None
    return {"paused": False, "next_run": next_run, "caught_up_to": None}
