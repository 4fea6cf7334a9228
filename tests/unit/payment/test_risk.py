"""The risk decision as plain rules: each rule's signal, the score, the outcome, the rules file
(versioned, reloaded, a bad one kept out), and the dynamic linking of step-up codes."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.errors import InvalidArgument, Unavailable
from meshlib.money import Amount
from openbank.common.v1 import money_pb2
from openbank.payment.v1 import payment_pb2
from services.payment import converters
from services.payment.adapters.identity_signals import BoundedIdentitySignals
from services.payment.adapters.risk_rules_file import ReloadableRiskRules
from services.payment.domain import step_up
from services.payment.domain.checks import CustomerHistory
from services.payment.domain.payments import Payment, PaymentState
from services.payment.domain.risk import (
    IdentitySignals,
    PsuContext,
    RiskOutcome,
    RiskRule,
    RiskRules,
    RiskSignals,
    Thresholds,
    load_risk_rules,
    parse_risk_rules,
)
from services.payment.settings import DEFAULT_RULES_FILE

NOON = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
USUAL = CustomerHistory({60: 1}, paid_beneficiary_before=True, average_amount_minor=100, history_count=5)
PRESENT = PsuContext("203.0.113.7", "device-1", "agent")


def _signals(amount: int = 100, history: CustomerHistory = USUAL, **overrides: object) -> RiskSignals:
    values: dict[str, object] = {"partner_id": "p1", "psu": PRESENT, "moment": NOON, **overrides}
    return RiskSignals(amount_minor=amount, history=history, **values)  # type: ignore[arg-type]


# Each rule kind: a payment that trips it and one that does not.
RULE_CASES = [
    (
        RiskRule("burst", "max_payments_per_window", score=1, window_seconds=60, max_count=2),
        _signals(history=dataclasses.replace(USUAL, payments_in_window={60: 2})),
        _signals(history=dataclasses.replace(USUAL, payments_in_window={60: 1})),
    ),
    (
        RiskRule("new", "new_beneficiary_threshold", score=1, threshold_minor=1_000),
        _signals(1_001, dataclasses.replace(USUAL, paid_beneficiary_before=False)),
        _signals(1_000, dataclasses.replace(USUAL, paid_beneficiary_before=False)),
    ),
    (
        RiskRule("avg", "amount_vs_average", score=1, multiplier=5, min_history=3),
        _signals(501),
        _signals(500),
    ),
    (
        RiskRule("night", "time_of_day", score=1, from_hour=23, to_hour=5),
        _signals(moment=NOON.replace(hour=2)),
        _signals(moment=NOON.replace(hour=5)),
    ),
    (
        RiskRule("absent", "psu_context_missing", score=1),
        _signals(psu=PsuContext(ip_address="203.0.113.7")),
        _signals(),
    ),
    (
        RiskRule("tier", "partner_risk_tier", score=1, tiers=("HIGH",)),
        _signals(partner_id="risky"),
        _signals(),
    ),
    (
        RiskRule("sign_ins", "failed_sign_ins", score=1, min_count=3),
        _signals(identity=IdentitySignals(failed_sign_ins=3)),
        _signals(identity=IdentitySignals(failed_sign_ins=2)),
    ),
    (
        RiskRule("consent", "consent_changed_recently", score=1, within_seconds=600),
        _signals(identity=IdentitySignals(consent_changed_seconds_ago=599)),
        _signals(identity=IdentitySignals(consent_changed_seconds_ago=600)),
    ),
]


@pytest.mark.parametrize(("rule", "trips", "passes"), RULE_CASES, ids=[c[0].kind for c in RULE_CASES])
def test_each_rule_fires_on_its_signal_only(rule: RiskRule, trips: RiskSignals, passes: RiskSignals) -> None:
    rules = RiskRules("v1", (rule,), partner_tiers={"risky": "HIGH"})
    assert rules.decide(trips).fired == (rule.id,)
    assert rules.decide(passes).fired == ()


def test_a_rule_needs_enough_history_and_an_unknown_identity_signal_never_fires() -> None:
    avg = RiskRules("v", (RiskRule("avg", "amount_vs_average", score=1, multiplier=5, min_history=3),))
    assert avg.decide(_signals(10_000, dataclasses.replace(USUAL, history_count=2))).fired == ()
    identity = RiskRules(
        "v",
        (
            RiskRule("s", "failed_sign_ins", score=1),
            RiskRule("c", "consent_changed_recently", score=1, within_seconds=60),
        ),
    )
    assert identity.decide(_signals(identity=IdentitySignals())).fired == ()


def test_the_score_picks_the_outcome_and_the_decision_explains_itself() -> None:
    rules = RiskRules(
        "2026-12-07.1",
        (
            RiskRule("new", "new_beneficiary_threshold", score=40, threshold_minor=1_000),
            RiskRule("absent", "psu_context_missing", score=30),
        ),
        Thresholds(step_up=40, review=70, refuse=100),
    )
    new_creditor = dataclasses.replace(USUAL, paid_beneficiary_before=False)
    assert rules.decide(_signals(2_000)).outcome is RiskOutcome.ALLOW
    stepped = rules.decide(_signals(2_000, new_creditor))
    assert (stepped.outcome, stepped.score, stepped.reason) == (RiskOutcome.STEP_UP, 40, "AUTHORISATION_REQUIRED")
    held = rules.decide(_signals(2_000, new_creditor, psu=PsuContext()))
    assert (held.outcome, held.score, held.fired, held.reason) == (
        RiskOutcome.REVIEW,
        70,
        ("new", "absent"),
        "HELD_FOR_REVIEW",
    )
    assert held.metadata() == {"rule": "new,absent", "rules_version": "2026-12-07.1", "score": "70"}
    assert held.signals["new_creditor"] == "true" and held.signals["psu_ip_address"] == ""
    assert held.audit_details()["rules_version"] == "2026-12-07.1"


def test_a_named_outcome_wins_over_a_milder_score_and_a_velocity_refusal_keeps_its_reason() -> None:
    burst = RiskRule("burst", "max_payments_per_window", outcome="refuse", window_seconds=60, max_count=1)
    night = RiskRule("night", "time_of_day", outcome="review", from_hour=0, to_hour=6)
    rules = RiskRules("v", (burst, night, RiskRule("absent", "psu_context_missing", score=100)))
    refused = rules.decide(_signals())
    assert (refused.outcome, refused.reason, refused.fired) == (
        RiskOutcome.REFUSE,
        "VELOCITY_RULE_TRIGGERED",
        ("burst",),
    )
    reviewed = rules.decide(
        _signals(history=dataclasses.replace(USUAL, payments_in_window={}), moment=NOON.replace(hour=1))
    )
    assert reviewed.outcome is RiskOutcome.REVIEW
    by_score = rules.decide(_signals(history=dataclasses.replace(USUAL, payments_in_window={}), psu=PsuContext()))
    assert (by_score.outcome, by_score.reason) == (RiskOutcome.REFUSE, "RISK_REFUSED")


@settings(max_examples=80)
@given(
    scores=st.lists(st.integers(1, 60), min_size=1, max_size=6), fire=st.lists(st.booleans(), min_size=6, max_size=6)
)
def test_the_outcome_is_the_thresholds_of_the_sum_of_the_fired_scores(scores: list[int], fire: list[bool]) -> None:
    # Each rule fires when its tiers include the partner's.
    rules = RiskRules(
        "v",
        tuple(
            RiskRule(f"r{i}", "partner_risk_tier", score=s, tiers=("HIGH",) if fire[i] else ("NONE",))
            for i, s in enumerate(scores)
        ),
        Thresholds(40, 70, 100),
        {"p1": "HIGH"},
    )
    decision = rules.decide(_signals())
    expected = sum(s for i, s in enumerate(scores) if fire[i])
    assert decision.score == expected
    assert decision.fired == tuple(f"r{i}" for i in range(len(scores)) if fire[i])
    assert decision.outcome == Thresholds(40, 70, 100).outcome(expected)
    # Monotone: more score is never a milder outcome.
    assert Thresholds(40, 70, 100).outcome(expected + 1) >= decision.outcome


def test_a_bad_rules_file_is_refused_naming_what_is_wrong() -> None:
    good = {"version": "1", "rules": [{"id": "a", "kind": "psu_context_missing", "score": 5}]}
    assert parse_risk_rules(good).version == "1"
    for bad, words in [
        ({"rules": []} | {"version": ""}, "version"),
        ({**good, "rules": [{"id": "a", "kind": "nope", "score": 1}]}, "kind"),
        ({**good, "rules": [{"id": "a", "kind": "psu_context_missing", "score": 1, "typo": 1}]}, "typo"),
        ({**good, "rules": [{"id": "a", "kind": "psu_context_missing"}]}, "score"),
        ({**good, "rules": [{"id": "a", "kind": "psu_context_missing", "outcome": "maybe"}]}, "outcome"),
        ({**good, "rules": good["rules"] * 2}, "twice"),
        ({**good, "thresholds": {"step_up": 80, "review": 70}}, "thresholds"),
        ({**good, "extra": 1}, "extra"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_risk_rules(bad)


def test_the_shipped_file_loads_and_an_earlier_velocity_file_reads_as_refusals() -> None:
    shipped = load_risk_rules(DEFAULT_RULES_FILE)
    assert shipped.version and {r.kind for r in shipped.rules} >= {"max_payments_per_window", "psu_context_missing"}
    legacy = parse_risk_rules({"rules": [{"name": "burst", "kind": "max_payments_per_window", "max_count": 3}]})
    assert legacy.rules == (RiskRule("burst", "max_payments_per_window", outcome="refuse", max_count=3),)


def test_the_rules_file_is_swapped_whole_and_a_bad_one_keeps_the_rules_in_force(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: '1'\nrules:\n  - {id: a, kind: psu_context_missing, score: 50}\n")
    rules = ReloadableRiskRules(path, check_every_seconds=0)
    before = rules()
    path.write_text("version: '2'\nrules:\n  - {id: b, kind: psu_context_missing, score: 90}\n")
    assert rules.reload() and rules().version == "2" and rules().rules[0].id == "b"
    assert before.version == "1"  # a decision taken with the old set saw it whole
    path.write_text("version: '3'\nrules:\n  - {id: c, kind: nonsense, score: 1}\n")
    assert not rules.reload()
    assert rules().version == "2" and "kind" in rules.last_error
    path.write_text("version: [unclosed\n")
    assert not rules.reload() and rules().version == "2"


def _payment(amount: int = 12_345, creditor: str = "acc-2", currency: str = "EUR") -> Payment:
    return Payment(
        payment_id="pay-1",
        partner_id="p1",
        consent_id="c1",
        debtor_account_id="acc-1",
        creditor_account_id=creditor,
        creditor_wallet_partner_id=None,
        amount=Amount(currency, amount),
        payment_type="TRANSFER",
        state=PaymentState.AWAITING_AUTHORISATION,
        created_at=NOON,
        updated_at=NOON,
        customer_id="cu-1",
    )


SECRET = b"test-secret"


def test_a_step_up_code_is_bound_to_the_amount_the_currency_and_the_payee() -> None:
    code = step_up.code_for(SECRET, _payment())
    assert len(code) == step_up.CODE_DIGITS and code.isdigit()
    assert step_up.code_matches(SECRET, _payment(), code)
    assert not step_up.code_matches(SECRET, _payment(amount=12_346), code)
    assert not step_up.code_matches(SECRET, _payment(creditor="acc-3"), code)
    assert not step_up.code_matches(SECRET, _payment(currency="GBP"), code)
    assert not step_up.code_matches(b"another-bank", _payment(), code)
    other_customer = dataclasses.replace(_payment(), customer_id="cu-2")
    assert not step_up.code_matches(SECRET, other_customer, code)


@settings(max_examples=60)
@given(a=st.integers(1, 10**9), b=st.integers(1, 10**9))
def test_codes_of_different_amounts_differ_almost_always(a: int, b: int) -> None:
    same = step_up.code_for(SECRET, _payment(a)) == step_up.code_for(SECRET, _payment(b))
    # A 6-digit code collides for one amount in a million; the message bound is never the same.
    assert step_up.linked_message(_payment(a)) != step_up.linked_message(_payment(b)) or a == b
    if a == b:
        assert same


class _Identity:
    def __init__(self, answer: IdentitySignals | None = None, delay: float = 0.0, error: bool = False) -> None:
        self.answer, self.delay, self.error = answer, delay, error

    async def recent(self, customer_id: str, consent_id: str) -> IdentitySignals:
        await asyncio.sleep(self.delay)
        if self.error:
            raise Unavailable("identity is down")
        assert self.answer is not None
        return self.answer


async def test_identity_signals_come_within_their_deadline_or_not_at_all() -> None:
    known = IdentitySignals(failed_sign_ins=4, consent_changed_seconds_ago=30)
    assert await BoundedIdentitySignals(_Identity(known), 1.0).recent("cu", "c") == known
    late = BoundedIdentitySignals(_Identity(known, delay=5.0), 0.05)
    down = BoundedIdentitySignals(_Identity(error=True), 1.0)
    assert await late.recent("cu", "c") == IdentitySignals() == await down.recent("cu", "c")
    assert (late.misses, down.misses) == (1, 1)
    rules = RiskRules("v", (RiskRule("s", "failed_sign_ins", score=100, min_count=3),))
    assert rules.decide(_signals(identity=await late.recent("cu", "c"))).outcome is RiskOutcome.ALLOW


def test_the_psu_context_is_read_from_create_payment_and_its_fields_are_bounded() -> None:
    request = payment_pb2.CreatePaymentRequest(
        request_id="r1",
        debtor_account="accounts/a1",
        creditor_account="accounts/a2",
        amount=money_pb2.Money(currency_code="EUR", minor_units=100),
        type=payment_pb2.PAYMENT_TYPE_TRANSFER,
        psu_context=payment_pb2.PsuContext(ip_address="203.0.113.7", device_id="d1", user_agent="ua"),
    )
    assert converters.new_payment(request).psu == PsuContext("203.0.113.7", "d1", "ua")
    request.psu_context.ip_address = "1" * 46
    with pytest.raises(InvalidArgument) as refused:
        converters.new_payment(request)
    assert [v.field for v in refused.value.violations] == ["psu_context.ip_address"]


def test_the_partner_tier_is_its_registration_s_and_the_file_s_only_when_the_registration_says_none() -> None:
    rule = RiskRule("tier", "partner_risk_tier", score=50, tiers=("HIGH",))
    rules = RiskRules("v1", (rule,), partner_tiers={"p1": "HIGH"})
    registered_low = rules.decide(_signals(partner_tier="LOW"))
    assert (registered_low.fired, registered_low.signals["partner_risk_tier"]) == ((), "LOW")
    registered_high = RiskRules("v1", (rule,)).decide(_signals(partner_tier="HIGH"))
    assert (registered_high.fired, registered_high.signals["partner_risk_tier"]) == (("tier",), "HIGH")
    assert rules.decide(_signals()).fired == ("tier",)  # not known from identity: the file's
    assert RiskRules("v1", (rule,)).decide(_signals()).signals["partner_risk_tier"] == "LOW"
