"""Dynamic isolation's rules (services/payment/domain/isolation.py), clock-driven: a capability
unused for its period is paused, not a moment before; the daily limit is lowered after a period
of low use only; a restore counts as a use; a payment needing what is paused, or above the
lowered limit, is refused with the reason that sends the customer to the bank."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlib.errors import FailedPrecondition
from services.payment.adapters.risk_rules_file import ReloadableRiskRules
from services.payment.domain.isolation import (
    CAPABILITIES,
    DAILY_LIMIT,
    NEW_CREDITOR,
    CapabilityState,
    IsolationPolicy,
    Status,
    check_payment,
    load_isolation_policy,
    parse_isolation_policy,
    restored,
    used_by,
)
from services.payment.settings import DEFAULT_ISOLATION_POLICY_FILE

START = dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC)
POLICY = parse_isolation_policy(
    {
        "version": "t.1",
        "new_creditor": {"pause_after_days": 30},
        "payment_types": {"pause_after_days": 90, "types": ["EXTERNAL_TRANSFER", "BILL_PAYMENT"]},
        "daily_limit": {"after_days": 60, "low_use_below_minor": 10_000, "floor_minor": 25_000, "currency": "EUR"},
    }
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now


def _known(used: tuple[str, ...] = (), at: dt.datetime = START) -> dict[str, CapabilityState]:
    """A customer first seen paying at ``at`` with ``used``."""
    return {c: CapabilityState("c1", c, since=at, last_used_at=at if c in used else None) for c in CAPABILITIES}


def _apply(states: dict[str, CapabilityState], changes: list[CapabilityState]) -> dict[str, CapabilityState]:
    return {**states, **{c.capability: c for c in changes}}


def test_new_creditors_are_paused_after_the_period_without_one_and_not_a_moment_before() -> None:
    clock = Clock()
    states = _known(used=("TRANSFER", NEW_CREDITOR))
    clock.advance(days=29, hours=23, minutes=59)
    assert [c.capability for c in POLICY.evaluate(states.values(), 50_000, clock.now)] == []
    clock.advance(minutes=1)
    (change,) = POLICY.evaluate(states.values(), 50_000, clock.now)
    assert (change.capability, change.status, change.reason, change.policy_version) == (
        NEW_CREDITOR,
        Status.PAUSED,
        "not used for 30 days",
        "t.1",
    )
    assert change.changed_by == "isolation-sweep" and change.changed_at == clock.now


def test_a_payment_to_a_new_creditor_renews_the_period() -> None:
    clock = Clock()
    states = _known(used=("TRANSFER", NEW_CREDITOR))
    used_again = clock.advance(days=20)
    states[NEW_CREDITOR] = CapabilityState("c1", NEW_CREDITOR, since=START, last_used_at=used_again)
    clock.advance(days=29)
    assert POLICY.evaluate(states.values(), 50_000, clock.now) == []
    clock.advance(days=1)
    assert [c.capability for c in POLICY.evaluate(states.values(), 50_000, clock.now)] == [NEW_CREDITOR]


def test_payment_types_never_used_are_paused_only_those_the_policy_names() -> None:
    clock = Clock()
    states = _known(used=("TRANSFER", NEW_CREDITOR))
    states[NEW_CREDITOR] = CapabilityState("c1", NEW_CREDITOR, since=START, last_used_at=START + dt.timedelta(days=89))
    clock.advance(days=90)
    paused = {c.capability: c for c in POLICY.evaluate(states.values(), 50_000, clock.now)}
    # TRANSFER and WALLET_TOP_UP are not in the policy's types: never paused, used or not.
    assert set(paused) == {"EXTERNAL_TRANSFER", "BILL_PAYMENT"}
    assert paused["EXTERNAL_TRANSFER"].reason == "never used for 90 days"


def test_the_daily_limit_is_lowered_to_the_floor_after_a_period_of_low_use_only() -> None:
    clock = Clock()
    states = {DAILY_LIMIT: CapabilityState("c1", DAILY_LIMIT, since=START)}
    clock.advance(days=59)
    assert POLICY.evaluate(states.values(), 0, clock.now) == []  # too early
    clock.advance(days=1)
    assert POLICY.evaluate(states.values(), 10_000, clock.now) == []  # a day at the mark: not low use
    (lowered,) = POLICY.evaluate(states.values(), 9_999, clock.now)
    assert (lowered.status, lowered.limit_minor, lowered.currency) == (Status.LOWERED, 25_000, "EUR")
    assert POLICY.evaluate([lowered], 0, clock.advance(days=365)) == []  # lowered stays lowered


def test_a_restore_counts_as_a_use_so_the_period_starts_again() -> None:
    clock = Clock()
    states = _known(used=("TRANSFER",))
    states = _apply(states, POLICY.evaluate(states.values(), 0, clock.advance(days=90)))
    assert states[NEW_CREDITOR].status is Status.PAUSED and states[DAILY_LIMIT].status is Status.LOWERED
    back = restored(states[DAILY_LIMIT], clock.advance(hours=1), "customer:c1")
    assert (back.status, back.limit_minor, back.last_used_at, back.changed_by) == (
        Status.ACTIVE,
        None,
        clock.now,
        "customer:c1",
    )
    states[DAILY_LIMIT] = back
    assert [c.capability for c in POLICY.evaluate(states.values(), 0, clock.advance(days=59))] == []
    assert [c.capability for c in POLICY.evaluate(states.values(), 0, clock.advance(days=1))] == [DAILY_LIMIT]


def _loosened(**changes: object) -> IsolationPolicy:
    """POLICY's next version with some rules changed (None: the rule removed)."""
    document: dict[str, object] = {
        "version": "t.2",
        "new_creditor": {"pause_after_days": 30},
        "payment_types": {"pause_after_days": 90, "types": ["EXTERNAL_TRANSFER", "BILL_PAYMENT"]},
        "daily_limit": {"after_days": 60, "low_use_below_minor": 10_000, "floor_minor": 25_000, "currency": "EUR"},
    }
    return parse_isolation_policy(document | changes)


def test_a_loosened_policy_releases_what_it_no_longer_isolates_and_the_period_counts_from_the_last_use() -> None:
    clock = Clock()
    states = _known(used=("TRANSFER", NEW_CREDITOR))
    states = _apply(states, POLICY.evaluate(states.values(), 0, clock.advance(days=90)))
    assert {c for c, s in states.items() if s.status is not Status.ACTIVE} == {
        NEW_CREDITOR,
        DAILY_LIMIT,
        "EXTERNAL_TRANSFER",
        "BILL_PAYMENT",
    }
    longer = _loosened(
        new_creditor={"pause_after_days": 120}, payment_types=None, daily_limit={**_DAILY, "after_days": 120}
    )
    released = {c.capability: c for c in longer.evaluate(states.values(), 0, clock.advance(days=1))}
    assert set(released) == {NEW_CREDITOR, DAILY_LIMIT, "EXTERNAL_TRANSFER", "BILL_PAYMENT"}
    for change in released.values():
        assert (change.status, change.limit_minor, change.policy_version, change.changed_by) == (
            Status.ACTIVE,
            None,
            "t.2",
            "isolation-sweep",
        )
        assert change.reason == "released: policy t.2 no longer isolates it"
        assert change.last_used_at == states[change.capability].last_used_at  # not a use
    states = _apply(states, list(released.values()))
    clock.now = START + dt.timedelta(days=119)
    assert longer.evaluate(states.values(), 0, clock.now) == []
    again = {c.capability: c.status for c in longer.evaluate(states.values(), 0, clock.advance(days=1))}
    assert again == {NEW_CREDITOR: Status.PAUSED, DAILY_LIMIT: Status.LOWERED}  # 120 days since the last use


def test_a_new_version_that_still_isolates_releases_nothing_and_neither_does_the_same_version() -> None:
    clock = Clock()
    states = _known(used=("TRANSFER", NEW_CREDITOR))
    states = _apply(states, POLICY.evaluate(states.values(), 0, clock.advance(days=90)))
    isolated = {c: s for c, s in states.items() if s.status is not Status.ACTIVE}
    same_rules = _loosened()
    assert same_rules.evaluate(isolated.values(), 0, clock.advance(days=1)) == []
    shorter = _loosened(new_creditor={"pause_after_days": 10}, daily_limit={**_DAILY, "after_days": 90})
    assert shorter.evaluate(isolated.values(), 0, clock.now) == []
    # Under its own version a lowered limit stays lowered, whatever the customer's days look like.
    assert POLICY.evaluate(isolated.values(), 1_000_000, clock.advance(days=365)) == []


def test_what_the_customer_restored_is_never_touched_by_a_release() -> None:
    clock = Clock()
    states = _known(used=("TRANSFER",))
    states = _apply(states, POLICY.evaluate(states.values(), 0, clock.advance(days=90)))
    states[NEW_CREDITOR] = restored(states[NEW_CREDITOR], clock.advance(hours=1), "customer:c1")
    released = _loosened(new_creditor=None).evaluate([states[NEW_CREDITOR]], 0, clock.advance(days=1))
    assert released == []


_DAILY = {"after_days": 60, "low_use_below_minor": 10_000, "floor_minor": 25_000, "currency": "EUR"}


def _refusal(states: dict[str, CapabilityState], **payment: object) -> FailedPrecondition:
    with pytest.raises(FailedPrecondition) as refused:
        check_payment(states, **{"payment_type": "TRANSFER", "new_creditor": False, "currency": "EUR", **payment})  # type: ignore[arg-type]
    return refused.value


def test_a_payment_needing_a_paused_capability_is_refused_telling_the_partner_to_send_the_customer_to_the_bank() -> (
    None
):
    states = _apply(_known(), POLICY.evaluate(_known().values(), 50_000, START + dt.timedelta(days=90)))
    error = _refusal(states, payment_type="TRANSFER", new_creditor=True, amount_minor=1, spent_today_minor=0)
    assert (error.reason, error.metadata) == (
        "CAPABILITY_PAUSED",
        {"capability": NEW_CREDITOR, "restore": "customer_at_bank"},
    )
    assert "restore" in str(error)
    error = _refusal(states, payment_type="BILL_PAYMENT", amount_minor=1, spent_today_minor=0)
    assert error.metadata["capability"] == "BILL_PAYMENT"
    # A creditor paid before and a type still active: it goes on.
    check_payment(
        states, payment_type="TRANSFER", new_creditor=False, amount_minor=1, currency="EUR", spent_today_minor=0
    )


def test_above_the_lowered_daily_limit_is_refused_and_up_to_it_goes_on() -> None:
    lowered = CapabilityState("c1", DAILY_LIMIT, START, status=Status.LOWERED, limit_minor=25_000, currency="EUR")
    states = {DAILY_LIMIT: lowered}
    check_payment(
        states,
        payment_type="TRANSFER",
        new_creditor=False,
        amount_minor=5_000,
        currency="EUR",
        spent_today_minor=20_000,
    )
    error = _refusal(states, amount_minor=5_001, spent_today_minor=20_000)
    assert (error.reason, error.metadata["limit_minor_units"], error.metadata["limit_currency"]) == (
        "DAILY_LIMIT_LOWERED",
        "25000",
        "EUR",
    )
    assert _refusal(states, amount_minor=1, currency="USD", spent_today_minor=0).reason == "DAILY_LIMIT_LOWERED"


@given(st.lists(st.integers(min_value=1, max_value=30_000), max_size=30), st.integers(1, 100_000))
def test_under_a_lowered_limit_what_one_day_accepts_never_sums_above_it(amounts: list[int], floor: int) -> None:
    states = {
        DAILY_LIMIT: CapabilityState("c1", DAILY_LIMIT, START, status=Status.LOWERED, limit_minor=floor, currency="EUR")
    }
    spent = 0
    for amount in amounts:
        try:
            check_payment(
                states,
                payment_type="TRANSFER",
                new_creditor=False,
                amount_minor=amount,
                currency="EUR",
                spent_today_minor=spent,
            )
        except FailedPrecondition:
            assert spent + amount > floor  # refused only what would pass the limit
            continue
        spent += amount
        assert spent <= floor


def test_a_payment_uses_its_type_and_a_new_creditor() -> None:
    assert used_by("TRANSFER", True) == ("TRANSFER", NEW_CREDITOR)
    assert used_by("WALLET_TOP_UP", False) == ("WALLET_TOP_UP",)


def test_the_shipped_policy_reads_and_a_bad_one_names_what_is_wrong() -> None:
    shipped = load_isolation_policy(DEFAULT_ISOLATION_POLICY_FILE)
    assert shipped.version and shipped.daily_limit is not None and NEW_CREDITOR in shipped.pause_after_days
    assert IsolationPolicy().evaluate(_known().values(), 0, START + dt.timedelta(days=10_000)) == []  # none: nothing
    for bad, words in (
        ({}, "version"),
        ({"version": "1", "extra": 1}, "unknown"),
        ({"version": "1", "new_creditor": {"pause_after_days": 0}}, "positive"),
        ({"version": "1", "payment_types": {"pause_after_days": 1, "types": ["CASH"]}}, "CASH"),
        ({"version": "1", "daily_limit": {"after_days": 1, "low_use_below_minor": 1, "floor_minor": 1}}, "currency"),
    ):
        with pytest.raises(ValueError, match=words):
            parse_isolation_policy(bad)


def test_the_policy_file_is_reloaded_and_a_bad_one_keeps_the_policy_in_force(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "isolation.yaml"
    path.write_text('version: "v1"\nnew_creditor:\n  pause_after_days: 30\n')
    policy = ReloadableRiskRules(path, 0, load_isolation_policy, on_sighup=False)
    assert policy().version == "v1" and policy().pause_after_days == {NEW_CREDITOR: 30.0}
    path.write_text('version: "v2"\nnew_creditor:\n  pause_after_days: 7\n')
    assert policy.reload() and policy().version == "v2" and policy().pause_after_days[NEW_CREDITOR] == 7.0
    path.write_text('version: "v3"\nnew_creditor:\n  pause_after_days: -1\n')
    assert not policy.reload() and policy().version == "v2" and "positive" in policy.last_error
