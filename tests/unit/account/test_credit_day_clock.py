"""The accrual's days and when each ends in the time entries are booked at (credit_wiring.
fast_day_clock): the UTC day, or the fast clock of tests, whose day ends map back to real time
so a day's end-of-day balance leaves out what was booked after it."""

from __future__ import annotations

import datetime as dt

from services.account.credit_wiring import fast_day_clock

START = dt.datetime(2026, 5, 1, 18, tzinfo=dt.UTC)


def test_utc_days_end_at_midnight() -> None:
    today, day_end = fast_day_clock(lambda: START, 0)
    assert today() == START.date()
    assert day_end(START.date()) == dt.datetime(2026, 5, 2, tzinfo=dt.UTC)


def test_a_fast_days_end_is_the_real_instant_its_clock_reaches_the_next_day() -> None:
    today, day_end = fast_day_clock(lambda: START, 2.0)  # two days a second
    assert today() == START.date()
    # 6 hours of the first day are left: an eighth of a real second at 172,800 accrual seconds per second.
    assert day_end(START.date()) == START + dt.timedelta(seconds=0.125)
    assert day_end(START.date() + dt.timedelta(days=2)) == START + dt.timedelta(seconds=1.125)
