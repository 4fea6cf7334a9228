"""The rules file: parsing (a bad file fails loudly), matching, the scheme's own checks, and the
shipped default file."""

from __future__ import annotations

import datetime as dt

import pytest

from meshlib.money import Amount
from schemesim.domain.rules import Answer, load_rules, parse_rules
from schemesim.domain.transfers import AccountId, AccountKind, Outcome
from schemesim.settings import DEFAULT_RULES_FILE
from tests.unit.scheme.samples import iban, transfer

RULES = {
    "default": {"action": "settle", "settle_after_seconds": 2},
    "rules": [
        {"name": "closed", "match": {"creditor_account": r"DE\d{10}0000000404"}, "action": "reject", "reason": "AC04"},
        {
            "name": "big-gbp",
            "match": {"currency": "GBP", "amount_at_least": 500, "amount_at_most": 900},
            "action": "reject",
            "reason": "AM02",
        },
        {
            "name": "come-back",
            "match": {"remittance_information": ".*RETURN.*"},
            "action": "return",
            "reason": "MD07",
            "settle_after_seconds": 1,
            "return_after_seconds": 259200,
        },
        {"name": "slow", "match": {"creditor_agent": "SLOW.*"}, "action": "settle", "answer_delay_seconds": 3},
        {"name": "silent", "match": {"end_to_end_id": "silent"}, "action": "settle", "answer": "never"},
        {"name": "lost", "match": {"end_to_end_id": "lost"}, "action": "settle", "answer": "never_received"},
        {"name": "proxy", "match": {"creditor_account": r"\+44.*"}, "action": "reject", "reason": "AC01"},
    ],
}


@pytest.fixture
def rules():  # type: ignore[no-untyped-def]
    return parse_rules(RULES)


def test_the_first_matching_rule_decides(rules) -> None:  # type: ignore[no-untyped-def]
    decision = rules.decide(transfer(iban("404")))
    assert (decision.rule, decision.outcome, decision.reason_code) == ("closed", Outcome.REJECT, "AC04")
    # Another account number, another bank code: no rule fits, the default settles (after 2 s).
    other = rules.decide(transfer(iban("405", bank_code="10010010")))
    assert (other.rule, other.outcome, other.settle_after) == ("default", Outcome.SETTLE, dt.timedelta(seconds=2))
    # Patterns match the whole value: a longer account number is not account 404.
    assert rules.decide(transfer(make_longer(iban("404")))).rule != "closed"


def make_longer(value: str) -> str:
    return value + "1"


@pytest.mark.parametrize(
    ("currency", "minor", "rule"),
    [
        ("GBP", 499, "default"),
        ("GBP", 500, "big-gbp"),
        ("GBP", 900, "big-gbp"),
        ("GBP", 901, "default"),
        ("EUR", 700, "default"),
    ],
)
def test_currency_and_inclusive_amount_bounds(rules, currency: str, minor: int, rule: str) -> None:  # type: ignore[no-untyped-def]
    assert rules.decide(transfer(minor=minor, currency=currency)).rule == rule


def test_a_return_is_decided_with_its_delays(rules) -> None:  # type: ignore[no-untyped-def]
    decision = rules.decide(transfer(remittance_information="please RETURN it"))
    assert decision.outcome is Outcome.RETURN and decision.reason_code == "MD07"
    assert decision.settle_after == dt.timedelta(seconds=1)
    assert decision.return_after == dt.timedelta(days=3)


def test_answers(rules) -> None:  # type: ignore[no-untyped-def]
    assert rules.decide(transfer(creditor_agent="SLOWDEFF")).answer_delay_seconds == 3
    assert rules.decide(transfer(end_to_end_id="silent")).answer is Answer.NEVER
    assert rules.decide(transfer(end_to_end_id="lost")).answer is Answer.NEVER_RECEIVED
    assert rules.decide(transfer()).answer is Answer.NORMAL


def test_scheme_account_ids_are_matched_and_never_iban_checked(rules) -> None:  # type: ignore[no-untyped-def]
    proxy = transfer(creditor_account=AccountId(AccountKind.SCHEME, "+447700900123"))
    assert rules.decide(proxy).rule == "proxy"
    other = transfer(creditor_account=AccountId(AccountKind.SCHEME, "wallet:42"))
    assert rules.decide(other).outcome is Outcome.SETTLE


def test_the_schemes_checks_come_before_any_rule(rules) -> None:  # type: ignore[no-untyped-def]
    # Account 404 with wrong check digits: AC01 (incorrect account number), not the rule's AC04.
    wrong = iban("404")
    wrong = wrong[:2] + ("00" if wrong[2:4] != "00" else "01") + wrong[4:]
    decision = rules.decide(transfer(wrong))
    assert (decision.rule, decision.outcome, decision.reason_code) == ("iban-check", Outcome.REJECT, "AC01")
    bad_bic = rules.decide(transfer(creditor_agent="SLOW"))
    assert (bad_bic.rule, bad_bic.reason_code) == ("bic-check", "RC01")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"rules": [{"name": "r", "action": "reject"}]}, "reject needs a reason"),
        ({"rules": [{"name": "r", "action": "reject", "reason": "MD07"}]}, "reject needs a reason"),
        ({"rules": [{"name": "r", "action": "return", "reason": "AC04"}]}, "return needs return_after_seconds"),
        (
            {"rules": [{"name": "r", "action": "return", "reason": "AM04", "return_after_seconds": 1}]},
            "return needs a reason",
        ),
        ({"rules": [{"name": "r", "action": "settle", "reason": "AC04"}]}, "settle takes no reason"),
        ({"rules": [{"name": "r", "action": "settle", "return_after_seconds": 5}]}, "applies to return only"),
        (
            {"rules": [{"name": "r", "action": "settle", "answer": "never", "answer_delay_seconds": 1}]},
            "answer normal only",
        ),
        ({"rules": [{"name": "r", "action": "explode"}]}, "rules.0.action"),
        ({"rules": [{"name": "r", "action": "settle", "match": {"iban": "DE.*"}}]}, "rules.0.match.iban"),
        (
            {"rules": [{"name": "r", "action": "settle", "match": {"creditor_account": "("}}]},
            "not a regular expression",
        ),
        ({"rules": [{"name": "r", "action": "settle", "settle_after_seconds": -1}]}, "settle_after_seconds"),
        ({"rules": [{"action": "settle"}]}, "rules.0.name"),
        ({"rules": [{"name": "r", "action": "settle"}, {"name": "r", "action": "settle"}]}, "unique"),
        ({"default": {"action": "settle", "match": {"currency": "EUR"}}}, "takes no match"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_bad_file_is_refused_with_a_readable_reason(document: object, message: str) -> None:
    with pytest.raises(ValueError, match="invalid scheme rules") as refused:
        parse_rules(document)
    assert message in str(refused.value)


def test_an_empty_file_settles_everything() -> None:
    decision = parse_rules(None).decide(transfer())
    assert (decision.rule, decision.outcome, decision.settle_after) == ("default", Outcome.SETTLE, dt.timedelta(0))


def test_a_file_that_is_not_yaml(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "rules.yaml"
    path.write_text("rules: [\n")
    with pytest.raises(ValueError, match="is not YAML"):
        load_rules(path)


# What schemesim/README.md and the shipped file promise, account number by account number.
SHIPPED = [
    ("1", "default", Outcome.SETTLE, "", Answer.NORMAL),
    ("404", "closed-account", Outcome.REJECT, "AC04", Answer.NORMAL),
    ("406", "blocked-account", Outcome.REJECT, "AC06", Answer.NORMAL),
    ("444", "insufficient-funds", Outcome.REJECT, "AM04", Answer.NORMAL),
    ("503", "unspecified-rejection", Outcome.REJECT, "MS03", Answer.NORMAL),
    ("900", "late-answer", Outcome.SETTLE, "", Answer.NORMAL),
    ("901", "lost-acknowledgement", Outcome.SETTLE, "", Answer.NEVER),
    ("902", "lost-on-the-way-in", Outcome.SETTLE, "", Answer.NEVER_RECEIVED),
    ("910", "slow-settlement", Outcome.SETTLE, "", Answer.NORMAL),
    ("704", "returned-closed-account", Outcome.RETURN, "AC04", Answer.NORMAL),
    ("707", "returned-after-three-days", Outcome.RETURN, "MD07", Answer.NORMAL),
]


@pytest.mark.parametrize(("account", "rule", "outcome", "reason", "answer"), SHIPPED)
def test_the_shipped_rules(account: str, rule: str, outcome: Outcome, reason: str, answer: Answer) -> None:
    decision = load_rules(DEFAULT_RULES_FILE).decide(transfer(iban(account)))
    assert (decision.rule, decision.outcome, decision.reason_code, decision.answer) == (rule, outcome, reason, answer)


def test_the_shipped_rules_delays_and_maximum() -> None:
    rules = load_rules(DEFAULT_RULES_FILE)
    assert rules.decide(transfer(iban("900"))).answer_delay_seconds == 5
    assert rules.decide(transfer(iban("910"))).settle_after == dt.timedelta(seconds=30)
    assert rules.decide(transfer(iban("707"))).return_after == dt.timedelta(days=3)
    assert rules.decide(transfer(minor=10_000_000)).outcome is Outcome.SETTLE  # 100,000.00 is allowed
    above = rules.decide(transfer(minor=10_000_001))
    assert (above.rule, above.reason_code) == ("above-instant-maximum", "AM02")
    assert Amount("EUR", 10_000_001).format() == "EUR 100000.01"
