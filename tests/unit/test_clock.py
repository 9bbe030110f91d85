"""Dates as the store keeps them (machinery.clock): naive UTC, an aware date converted before its zone is dropped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from machinery import clock
from machinery.runtime import flow
from machinery.store import EPOCH, utcnow

PARIS_SUMMER = timezone(timedelta(hours=2))
NEW_YORK = timezone(timedelta(hours=-5))


@pytest.mark.parametrize("aware, naive", [
    (datetime(2026, 7, 1, 14, 30, tzinfo=PARIS_SUMMER), datetime(2026, 7, 1, 12, 30)),
    (datetime(2026, 1, 1, 22, 0, tzinfo=NEW_YORK), datetime(2026, 1, 2, 3, 0)),
    (datetime(2026, 1, 1, 0, 0, 0, 1500, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 0, 1500)),
])
def test_an_aware_date_is_the_same_instant_in_naive_utc(aware, naive):
    assert clock.naive_utc(aware) == naive
    assert clock.naive_utc(aware).tzinfo is None


def test_a_naive_date_is_taken_as_utc_already_and_none_stays_none():
    assert clock.naive_utc(datetime(2026, 3, 4, 5, 6)) == datetime(2026, 3, 4, 5, 6)
    assert clock.naive_utc(None) is None


def test_now_is_naive_utc_to_the_millisecond():
    now = clock.utcnow()
    assert now.tzinfo is None and now.microsecond % 1000 == 0
    assert abs(now - datetime.now(UTC).replace(tzinfo=None)) < timedelta(seconds=5)
    assert clock.aware_now().tzinfo is UTC


def test_the_store_keeps_the_clocks_names():
    assert EPOCH is clock.EPOCH and utcnow is clock.utcnow


@pytest.mark.parametrize("when, step_s, start", [
    (datetime(2026, 1, 2, 3, 7, 59), 300, datetime(2026, 1, 2, 3, 5)),
    (datetime(2026, 1, 2, 3, 10), 300, datetime(2026, 1, 2, 3, 10)),
    (datetime(2026, 1, 2, 3, 59, 59, 999000), 3600, datetime(2026, 1, 2, 3, 0)),
    (datetime(2026, 1, 2, 5, 7, tzinfo=PARIS_SUMMER), 3600, datetime(2026, 1, 2, 3, 0)),
])
def test_a_date_floors_to_the_start_of_its_slot(when, step_s, start):
    assert clock.floor(when, step_s) == start


def test_a_flow_lease_that_ended_in_another_zone_is_seen_as_ended():
    # GIVEN a slot whose lease ended ten minutes ago, its date given in UTC+2
    now = datetime(2026, 7, 1, 12, 0)
    ended = datetime(2026, 7, 1, 13, 50, tzinfo=PARIS_SUMMER)
    limits = flow.Limits(name="upper", max_concurrency=1)
    # WHEN a call asks for the slot now
    update, admission = flow.admit({"holders": {"other": ended}}, limits, "me", now, 30.0)
    # THEN the ended lease frees the slot (with its zone merely dropped it would end two hours from now)
    assert admission.granted and update["$unset"] == {"holders.other": ""}
