"""The credit line offer rule (services/account/domain/credit_offers.py) with the shipped rules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

import services.account
from services.account.domain.credit_offers import CreditRules, LedgerHistory, Offer, Refusal, decide_offer

RULES = CreditRules.from_mapping(
    yaml.safe_load((Path(services.account.__file__).parent / "credit_rules.yaml").read_text())
)
NOW = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)


def test_worked_examples() -> None:
    # 2000.00 a month: the middle band, 40% of it is 800.00, within its cap of 2000.00.
    assert decide_offer(LedgerHistory([200_000] * 3, 0, 0), RULES, NOW) == Offer(
        80_000, 1490, NOW + dt.timedelta(days=14)
    )
    assert decide_offer(LedgerHistory([1_000_000] * 3, 0, 0), RULES, NOW).limit == 500_000  # type: ignore[union-attr]
    # 40% of 2001.23 is 800.49: the limit is whole euros, 800.00.
    assert decide_offer(LedgerHistory([200_123] * 3, 0, 0), RULES, NOW).limit == 80_000  # type: ignore[union-attr]
    assert decide_offer(LedgerHistory([200_000] * 3, 0, 1), RULES, NOW) is Refusal.OPEN_DISPUTES
    assert decide_offer(LedgerHistory([200_000] * 3, 2, 0), RULES, NOW) is Refusal.OVERDRAWN_RECENTLY
    assert decide_offer(LedgerHistory([0, 0, 600_000], 0, 0), RULES, NOW) is Refusal.NOT_ENOUGH_INCOME_HISTORY
    assert decide_offer(LedgerHistory([40_000] * 3, 0, 0), RULES, NOW) is Refusal.INCOME_TOO_LOW


histories = st.builds(
    LedgerHistory,
    st.lists(st.integers(min_value=0, max_value=700_000), min_size=0, max_size=4),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=0, max_value=2),
)


@given(histories)
def test_an_offer_is_whole_units_within_the_bands_caps_and_income(history: LedgerHistory) -> None:
    decided = decide_offer(history, RULES, NOW)
    if isinstance(decided, Offer):
        assert decided.limit > 0 and decided.limit % 100 == 0
        assert decided.limit <= max(b.max_limit for b in RULES.bands)
        assert decided.limit <= sum(history.monthly_income) // len(history.monthly_income)
        assert history.disputes == 0 and history.negative_days == 0


@given(histories, st.integers(min_value=0, max_value=1_000_000))
def test_more_income_never_lowers_the_limit(history: LedgerHistory, more: int) -> None:
    richer = LedgerHistory([m + more for m in history.monthly_income], history.negative_days, history.disputes)
    before, after = decide_offer(history, RULES, NOW), decide_offer(richer, RULES, NOW)
    if isinstance(before, Offer):
        assert isinstance(after, Offer) and after.limit >= before.limit
