"""Dates as the store keeps them: naive UTC, to the millisecond.

MongoDB keeps a date as milliseconds since 1970 UTC, with no zone, and mongomock hands back naive
datetimes: so every date written is naive UTC, and every aware one is converted to UTC before its zone
is dropped (dropping the zone alone would shift a date given in another zone by its offset).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1)  # the earliest date: a lease that has expired, a webhook due at once
_MILLISECOND = timedelta(milliseconds=1)


def utcnow() -> datetime:
    """Now, as the naive UTC datetime both MongoDB and mongomock store without surprise: to the
    millisecond, as BSON keeps it, so a date answered before it is stored equals the stored one.
    Counted from 1970 as BSON counts it: a third of the time of `datetime.now(UTC)` and its
    rounding, and a sync event reads the clock a dozen times."""
    return EPOCH + time.time_ns() // 1_000_000 * _MILLISECOND


def aware_now() -> datetime:
    """Now as an aware UTC datetime: what reckoning in time zones (a schedule's cron) starts from."""
    return datetime.now(UTC)


def naive_utc(value: datetime | None) -> datetime | None:
    """A date as the store keeps it: an aware one converted to UTC, then without its zone; a naive
    one is taken as UTC already, and None (a date not set) stays None."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def floor(when: datetime, step_s: int) -> datetime:
    """The start, naive UTC, of the `step_s`-second slot (counted from 1970) that `when` falls in."""
    seconds = (naive_utc(when) - EPOCH) // timedelta(seconds=1)
    return EPOCH + timedelta(seconds=seconds - seconds % step_s)
