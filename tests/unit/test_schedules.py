"""When a schedule's ticks fall (cron in a time zone, across DST changes, or every N seconds), what
catch_up does after downtime, and which definitions are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from machinery.exceptions import InvalidData
from machinery.schedules import GRACE_S, Timing, catch_up, check_catch_up, check_timing

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def utc(*parts) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def ticks(timing: Timing, start: datetime, n: int) -> list[datetime]:
    found = []
    for _ in range(n):
        start = timing.after(start)
        found.append(start)
    return found


def test_every_s_ticks_on_multiples_of_its_period_since_the_epoch():
    timing = Timing(every_s=3600)
    expected = [utc(2026, 6, 1, 13), utc(2026, 6, 1, 14), utc(2026, 6, 1, 15)]
    assert ticks(timing, utc(2026, 6, 1, 12, 30, 5), 3) == expected


def test_every_s_after_and_before_a_tick_are_strict():
    timing = Timing(every_s=10)
    assert timing.after(utc(2026, 1, 1, 0, 0, 10)) == utc(2026, 1, 1, 0, 0, 20)
    assert timing.before(utc(2026, 1, 1, 0, 0, 10)) == utc(2026, 1, 1, 0, 0, 0)
    assert timing.before(utc(2026, 1, 1, 0, 0, 15)) == utc(2026, 1, 1, 0, 0, 10)


def test_a_cron_is_read_in_its_time_zone():
    timing = Timing(cron="0 9 * * *", timezone="America/New_York")
    # 09:00 in New York in June is 13:00 UTC (EDT, UTC-4); in December 14:00 UTC (EST, UTC-5).
    assert timing.after(utc(2026, 6, 1, 0)) == utc(2026, 6, 1, 13)
    assert timing.after(utc(2026, 12, 1, 0)) == utc(2026, 12, 1, 14)


def test_a_nightly_cron_keeps_its_local_hour_across_the_spring_change():
    # Paris goes from 02:00 to 03:00 on 29 March 2026: 04:00 local is 03:00 UTC before, 02:00 UTC after.
    timing = Timing(cron="0 4 * * *", timezone="Europe/Paris")
    assert ticks(timing, utc(2026, 3, 27, 12), 3) == [utc(2026, 3, 28, 3), utc(2026, 3, 29, 2), utc(2026, 3, 30, 2)]


def test_a_tick_in_the_skipped_hour_fires_as_croniter_places_it():
    # 02:30 does not exist in Paris on 29 March 2026: croniter fires at 03:00 local (01:00 UTC) instead.
    timing = Timing(cron="30 2 * * *", timezone="Europe/Paris")
    expected = [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]
    assert ticks(timing, utc(2026, 3, 27, 12), 3) == expected


def test_a_tick_in_the_repeated_hour_fires_at_each_of_its_two_instants():
    # 02:30 happens twice in Paris on 25 October 2026 (at 00:30 and 01:30 UTC): croniter fires at both,
    # and each next tick is found from the one before, as the scheduler finds them.
    timing = Timing(cron="30 2 * * *", timezone="Europe/Paris")
    found = ticks(timing, utc(2026, 10, 24, 12), 3)
    assert found == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30), utc(2026, 10, 26, 1, 30)]
    assert timing.before(found[1]) == found[0]


def test_an_hourly_cron_in_a_time_zone_ticks_every_real_hour_through_the_autumn_change():
    timing = Timing(cron="0 * * * *", timezone="Europe/Paris")
    found = ticks(timing, utc(2026, 10, 24, 22, 30), 5)
    assert [b - a for a, b in zip(found, found[1:], strict=False)] == [timedelta(hours=1)] * 4


def test_a_cron_with_seconds_ticks_each_second():
    timing = Timing(cron="* * * * * *")
    assert ticks(timing, utc(2026, 1, 1, 0, 0, 0), 2) == [utc(2026, 1, 1, 0, 0, 1), utc(2026, 1, 1, 0, 0, 2)]


# -- catch_up ----------------------------------------------------------------------------

EVERY_10 = Timing(every_s=10)
DOWN_FROM = utc(2026, 6, 1, 11, 0)  # the schedule's next tick when the processes stopped; NOW is an hour on
CUTOFF = NOW - timedelta(seconds=GRACE_S)  # 11:59:00: ticks before it were missed


def test_a_tick_reached_within_the_grace_runs_whatever_the_policy():
    for policy in ("none", "one", {"all": 5}):
        assert catch_up(EVERY_10, NOW - timedelta(seconds=GRACE_S), NOW, policy) is None
        assert catch_up(EVERY_10, NOW - timedelta(seconds=5), NOW, policy) is None


def test_catch_up_none_skips_every_missed_tick_and_resumes_at_the_first_on_time():
    late = catch_up(EVERY_10, DOWN_FROM, NOW, "none")
    assert late.next_run == CUTOFF
    assert (late.missed_first, late.missed_last, late.missed) == (DOWN_FROM, CUTOFF - timedelta(seconds=10), 354)


def test_catch_up_one_runs_the_latest_missed_tick():
    late = catch_up(EVERY_10, DOWN_FROM, NOW, "one")
    assert late.next_run == CUTOFF - timedelta(seconds=10)
    assert late.missed == 353 and late.missed_last == CUTOFF - timedelta(seconds=20)


def test_catch_up_all_n_runs_the_latest_n_missed_ticks():
    late = catch_up(EVERY_10, DOWN_FROM, NOW, {"all": 100})
    assert late.next_run == CUTOFF - timedelta(seconds=1000)
    assert late.missed == 254


def test_catch_up_all_of_more_than_were_missed_runs_them_all_and_skips_none():
    late = catch_up(EVERY_10, DOWN_FROM, NOW, {"all": 1000})
    assert late.next_run == DOWN_FROM and late.missed == 0 and late.missed_first is None
    # The ticks kept are not caught up again as they run, late as they are.
    assert catch_up(EVERY_10, DOWN_FROM + timedelta(seconds=10), NOW + timedelta(seconds=1), {"all": 1000},
                    caught_up_to=late.caught_up_to) is None


def test_a_cron_missed_overnight_in_its_time_zone_runs_the_latest_night_with_one():
    timing = Timing(cron="0 2 * * *", timezone="Europe/Paris")
    first_missed = utc(2026, 5, 29, 0)  # 02:00 in Paris (CEST)
    late = catch_up(timing, first_missed, NOW, "one")
    assert late.next_run == utc(2026, 6, 1, 0)
    assert (late.missed_first, late.missed_last, late.missed) == (first_missed, utc(2026, 5, 31, 0), 3)
    late = catch_up(timing, first_missed, NOW, "none")
    assert late.next_run == utc(2026, 6, 2, 0) and late.missed == 4


# -- refusals -----------------------------------------------------------------------------

@pytest.mark.parametrize("definition, field", [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "* * *"}, "cron"),
    ({"cron": "every day"}, "cron"),
    ({"cron": "0 0 30 2 *"}, "cron"),  # 30 February: never fires
    ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "timezone"),
    ({"cron": "0 2 * * *", "timezone": "../../etc/passwd"}, "timezone"),
    ({"cron": "0 2 * * *", "timezone": ""}, "timezone"),
    ({"cron": "0 2 * * *", "every_s": 60}, "cron"),
    ({}, "cron"),
    ({"every_s": 0}, "every_s"),
    ({"every_s": 1.5}, "every_s"),
    ({"every_s": True}, "every_s"),
    ({"every_s": 60, "timezone": "Europe/Paris"}, "timezone"),
])
def test_a_bad_timing_is_refused_naming_its_field(definition, field):
    with pytest.raises(InvalidData) as refused:
        check_timing(definition, NOW)
    assert list(refused.value.errors) == [field]


@pytest.mark.parametrize("policy", ["all", "some", {"all": 0}, {"all": 1001}, {"all": "5"}, {"every": 3},
                                    {"all": 5, "more": 1}, None, 3])
def test_a_catch_up_out_of_bounds_is_refused(policy):
    with pytest.raises(InvalidData) as refused:
        check_catch_up(policy)
    assert list(refused.value.errors) == ["catch_up"]


def test_the_largest_catch_up_is_accepted():
    assert check_catch_up({"all": 1000}) == {"all": 1000}
