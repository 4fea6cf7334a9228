"""A payment mandate's control parameters (UK OB VRP): periods at their boundaries, several
periods at once, exact limits, the creditor and the validity; no I/O."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.errors import FailedPrecondition
from meshlib.mandates import ALIGNMENTS, PERIOD_TYPES, Mandate, PeriodicLimit
from meshlib.money import Amount
from services.payment.domain import mandates
from services.payment.domain.mandates import PeriodUsage, add_months, period_window

UTC = dt.UTC
ANCHOR = dt.datetime(2026, 1, 31, 15, 30, tzinfo=UTC)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, micro: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, 0, micro, tzinfo=UTC)


def mandate(*limits: PeriodicLimit, creditor: str | None = "shop", wallet: str | None = None, **fields) -> Mandate:  # type: ignore[no-untyped-def]
    values = dict(
        mandate_type="OTHER",
        creditor_account_id=creditor,
        creditor_wallet_partner_id=wallet,
        currency="EUR",
        maximum_individual_minor=5_000,
        periodic_limits=limits,
        valid_from=ANCHOR,
        valid_to=at(2027, 1, 31),
    )
    values.update(fields)
    return Mandate(**values)  # type: ignore[arg-type]


def window(kind: str, alignment: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    return period_window(PeriodicLimit(kind, alignment, 1), ANCHOR, now)


# ---- periods ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "now", "start", "end"),
    [
        ("DAY", at(2026, 3, 4, 23, 59, 999_999), at(2026, 3, 4), at(2026, 3, 5)),
        ("DAY", at(2026, 3, 5), at(2026, 3, 5), at(2026, 3, 6)),
        ("WEEK", at(2026, 3, 8, 23, 59), at(2026, 3, 2), at(2026, 3, 9)),  # Sunday: the week of Monday 2nd
        ("WEEK", at(2026, 3, 9), at(2026, 3, 9), at(2026, 3, 16)),
        ("MONTH", at(2026, 2, 28, 23, 59), at(2026, 2, 1), at(2026, 3, 1)),
        ("MONTH", at(2026, 12, 31, 12), at(2026, 12, 1), at(2027, 1, 1)),
        ("HALF_YEAR", at(2026, 6, 30, 23, 59), at(2026, 1, 1), at(2026, 7, 1)),
        ("HALF_YEAR", at(2026, 7, 1), at(2026, 7, 1), at(2027, 1, 1)),
        ("YEAR", at(2026, 12, 31, 23, 59), at(2026, 1, 1), at(2027, 1, 1)),
    ],
)
def test_calendar_periods(kind: str, now: dt.datetime, start: dt.datetime, end: dt.datetime) -> None:
    assert window(kind, "CALENDAR", now) == (start, end)


@pytest.mark.parametrize(
    ("kind", "now", "start", "end"),
    [
        # The anchor is Saturday 31 January: weeks run Saturday to Saturday.
        ("WEEK", at(2026, 2, 6, 23, 59), at(2026, 1, 31), at(2026, 2, 7)),
        ("WEEK", at(2026, 2, 7), at(2026, 2, 7), at(2026, 2, 14)),
        ("FORTNIGHT", at(2026, 2, 13, 23, 59), at(2026, 1, 31), at(2026, 2, 14)),
        # Months from the 31st: on the last day of shorter months, back on the 31st after.
        ("MONTH", at(2026, 1, 31), at(2026, 1, 31), at(2026, 2, 28)),
        ("MONTH", at(2026, 2, 27, 23, 59), at(2026, 1, 31), at(2026, 2, 28)),
        ("MONTH", at(2026, 2, 28), at(2026, 2, 28), at(2026, 3, 31)),
        ("MONTH", at(2026, 4, 30), at(2026, 4, 30), at(2026, 5, 31)),
        ("HALF_YEAR", at(2026, 7, 30, 23), at(2026, 1, 31), at(2026, 7, 31)),
        ("YEAR", at(2027, 1, 30), at(2026, 1, 31), at(2027, 1, 31)),
        # The anchor's time of day does not matter: periods start at midnight UTC.
        ("DAY", at(2026, 1, 31, 1), at(2026, 1, 31), at(2026, 2, 1)),
    ],
)
def test_consent_aligned_periods(kind: str, now: dt.datetime, start: dt.datetime, end: dt.datetime) -> None:
    assert window(kind, "CONSENT", now) == (start, end)


def test_a_calendar_fortnight_does_not_exist_so_it_counts_from_the_anchor() -> None:
    assert window("FORTNIGHT", "CALENDAR", at(2026, 2, 1)) == window("FORTNIGHT", "CONSENT", at(2026, 2, 1))


def test_add_months_clamps_from_the_anchor_never_chained() -> None:
    anchor = dt.date(2026, 1, 31)
    assert [add_months(anchor, n) for n in range(4)] == [
        dt.date(2026, 1, 31),
        dt.date(2026, 2, 28),
        dt.date(2026, 3, 31),
        dt.date(2026, 4, 30),
    ]
    assert add_months(dt.date(2024, 2, 29), 12) == dt.date(2025, 2, 28)
    assert add_months(anchor, -2) == dt.date(2025, 11, 30)


_LENGTH_DAYS = {"DAY": (1, 1), "WEEK": (7, 7), "FORTNIGHT": (14, 14), "MONTH": (28, 31)}
_LENGTH_DAYS.update({"HALF_YEAR": (181, 184), "YEAR": (365, 366)})
moments = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2090, 1, 1), timezones=st.just(UTC))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(PERIOD_TYPES), st.sampled_from(ALIGNMENTS), moments, moments)
def test_periods_tile_the_timeline(kind: str, alignment: str, anchor: dt.datetime, now: dt.datetime) -> None:
    """Whatever the anchor and the moment: the moment is in its period, periods start and end at
    UTC midnights, have their length, and follow each other without gap or overlap."""
    limit = PeriodicLimit(kind, alignment, 1)
    start, end = period_window(limit, anchor, now)
    assert start <= now < end
    assert start.time() == end.time() == dt.time(0) and start.tzinfo == end.tzinfo == UTC
    low, high = _LENGTH_DAYS[kind]
    assert low <= (end - start).days <= high
    assert period_window(limit, anchor, end)[0] == end
    assert period_window(limit, anchor, start - dt.timedelta(microseconds=1))[1] == start
    if alignment == "CONSENT" and kind != "DAY":
        # Some period starts on the anchor's day.
        assert period_window(limit, anchor, anchor)[0] == anchor.replace(hour=0, minute=0, second=0, microsecond=0)


# ---- limits ----------------------------------------------------------------------------------


def usage(m: Mandate, used: dict[str, int], now: dt.datetime) -> list[PeriodUsage]:
    return [PeriodUsage(limit, s, e, used.get(limit.period_type, 0)) for limit, s, e in mandates.windows(m, now)]


def refusal(call) -> FailedPrecondition:  # type: ignore[no-untyped-def]
    with pytest.raises(FailedPrecondition) as raised:
        call()
    return raised.value


def test_exact_period_limits_pass_one_minor_unit_more_is_refused_naming_the_period() -> None:
    m = mandate(PeriodicLimit("DAY", "CALENDAR", 1_000), PeriodicLimit("MONTH", "CONSENT", 3_000))
    now = at(2026, 2, 10, 12)
    mandates.check_periods(m, Amount("EUR", 400), usage(m, {"DAY": 600, "MONTH": 2_600}, now))
    error = refusal(lambda: mandates.check_periods(m, Amount("EUR", 401), usage(m, {"DAY": 600}, now)))
    assert error.reason == "MANDATE_PERIOD_LIMIT_EXCEEDED"
    assert error.metadata == {
        "period_type": "DAY",
        "period_alignment": "CALENDAR",
        "period_end": "2026-02-11T00:00:00+00:00",
        "remaining_minor": "400",
    }
    # The day has room, the consent month not: the month refuses.
    error = refusal(lambda: mandates.check_periods(m, Amount("EUR", 401), usage(m, {"MONTH": 2_600}, now)))
    assert error.metadata["period_type"] == "MONTH"
    assert error.metadata["period_end"] == "2026-02-28T00:00:00+00:00"


def test_exact_individual_maximum_passes_and_one_more_is_refused() -> None:
    m = mandate()
    now = at(2026, 3, 1)
    mandates.check_payment(m, "shop", None, Amount("EUR", 5_000), now)
    error = refusal(lambda: mandates.check_payment(m, "shop", None, Amount("EUR", 5_001), now))
    assert (error.reason, error.metadata) == ("MANDATE_AMOUNT_EXCEEDED", {"maximum_minor": "5000"})
    error = refusal(lambda: mandates.check_payment(m, "shop", None, Amount("GBP", 1), now))
    assert (error.reason, error.metadata) == ("MANDATE_AMOUNT_EXCEEDED", {"currency": "EUR"})


def test_only_the_mandates_creditor_is_paid() -> None:
    now = at(2026, 3, 1)
    to_account, to_wallet = mandate(), mandate(creditor=None, wallet="p1")
    mandates.check_payment(to_account, "shop", None, Amount("EUR", 1), now)
    mandates.check_payment(to_wallet, None, "p1", Amount("EUR", 1), now)
    for m, account, wallet in [
        (to_account, "other", None),
        (to_account, None, "p1"),
        (to_wallet, None, "p2"),
        (to_wallet, "shop", "p1"),
        (to_wallet, None, None),
    ]:
        error = refusal(lambda m=m, a=account, w=wallet: mandates.check_payment(m, a, w, Amount("EUR", 1), now))
        assert (error.reason, error.metadata) == ("MANDATE_CREDITOR_MISMATCH", {"creditor": m.creditor_name})


def test_validity_from_inclusive_to_exclusive() -> None:
    m = mandate()
    mandates.check_payment(m, "shop", None, Amount("EUR", 1), m.valid_from)
    mandates.check_payment(m, "shop", None, Amount("EUR", 1), m.valid_to - dt.timedelta(microseconds=1))
    for now in (m.valid_from - dt.timedelta(microseconds=1), m.valid_to):
        error = refusal(lambda now=now: mandates.check_payment(m, "shop", None, Amount("EUR", 1), now))
        assert error.reason == "MANDATE_NOT_VALID_NOW"


limits_strategy = st.lists(
    st.tuples(st.sampled_from(PERIOD_TYPES), st.sampled_from(ALIGNMENTS), st.integers(1, 3_000)),
    min_size=1,
    max_size=4,
    unique_by=lambda t: t[0],
)
payments_strategy = st.lists(st.tuples(st.integers(0, 400 * 24), st.integers(1, 1_500)), min_size=1, max_size=40).map(
    sorted
)


@settings(max_examples=300, deadline=None)
@given(limits_strategy, payments_strategy)
def test_accepted_payments_never_exceed_any_period_and_only_an_excess_is_refused(limits, payments) -> None:  # type: ignore[no-untyped-def]
    """Payments at random hours over a year, checked as the register does (each period's sum of
    the accepted ones since its start): in every period of every limit the accepted total stays
    within the limit, and each refused payment would really have exceeded one."""
    m = mandate(*(PeriodicLimit(k, a, x) for k, a, x in limits), maximum_individual_minor=10**9)
    accepted: list[tuple[dt.datetime, int]] = []
    for hour, amount in payments:
        now = ANCHOR + dt.timedelta(hours=hour)
        spent = [
            PeriodUsage(limit, s, e, sum(a for t, a in accepted if s <= t < e))
            for limit, s, e in mandates.windows(m, now)
        ]
        try:
            mandates.check_periods(m, Amount("EUR", amount), spent)
        except FailedPrecondition:
            assert any(p.used_minor + amount > p.limit.maximum_minor for p in spent)
        else:
            accepted.append((now, amount))
    for limit in m.periodic_limits:
        for time, _ in accepted:
            start, end = period_window(limit, m.valid_from, time)
            assert sum(a for t, a in accepted if start <= t < end) <= limit.maximum_minor
