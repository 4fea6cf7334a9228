"""The rules file: how "the other bank" answers each credit transfer.

The first rule whose ``match`` fits a transfer decides; a transfer no rule fits gets
``default``. Before any rule, the scheme's own checks: a creditor IBAN that is not a valid IBAN
(country, length, check digits) is rejected AC01, a creditor agent that is not a BIC RC01.
The file format is described in ``schemesim/README.md``; a bad file fails start-up with a
message naming the rule and the field.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from meshlib.iban import is_bic, is_iban
from schemesim.domain.codes import RETURN_REASONS, STATUS_REASONS
from schemesim.domain.transfers import AccountKind, CreditTransfer, Outcome

# The scheme's own checks, named like rules in what it stores.
IBAN_CHECK = "iban-check"
BIC_CHECK = "bic-check"


class Action(enum.Enum):
    """What the other bank does with the transfer."""

    SETTLE = "settle"
    REJECT = "reject"
    RETURN = "return"


class Answer(enum.Enum):
    """How the submission is answered."""

    NORMAL = "normal"  # answered (after answer_delay_seconds)
    NEVER = "never"  # processed, never answered: a lost acknowledgement
    NEVER_RECEIVED = "never_received"  # lost on its way in: not processed, never answered


# Match fields that hold regular expressions.
_PATTERN_FIELDS = ("creditor_account", "creditor_agent", "debtor_account", "end_to_end_id", "remittance_information")


class Match(BaseModel):
    """Conditions on a transfer; all that are given must hold. Patterns are regular
    expressions that must match the whole value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    creditor_account: str | None = None  # the creditor's IBAN or scheme account id
    creditor_agent: str | None = None  # the creditor agent's BIC
    debtor_account: str | None = None
    end_to_end_id: str | None = None
    remittance_information: str | None = None
    currency: str | list[str] | None = None  # exact ISO 4217 code(s)
    amount_at_least: int | None = Field(default=None, ge=0)  # minor units, inclusive
    amount_at_most: int | None = Field(default=None, ge=0)  # minor units, inclusive
    _compiled: dict[str, re.Pattern[str]] = PrivateAttr(default_factory=dict)

    @field_validator(*_PATTERN_FIELDS)
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from None
        return value

    def model_post_init(self, context: Any) -> None:
        """Compile the patterns once."""
        patterns = {name: getattr(self, name) for name in _PATTERN_FIELDS}
        self._compiled = {name: re.compile(value) for name, value in patterns.items() if value is not None}

    def fits(self, transfer: CreditTransfer) -> bool:
        """Whether every condition holds for ``transfer``."""
        values = {
            "creditor_account": transfer.creditor_account.value,
            "creditor_agent": transfer.creditor_agent,
            "debtor_account": transfer.debtor_account.value,
            "end_to_end_id": transfer.end_to_end_id,
            "remittance_information": transfer.remittance_information,
        }
        for name, pattern in self._compiled.items():
            if not pattern.fullmatch(values[name]):
                return False
        if self.currency is not None:
            currencies = [self.currency] if isinstance(self.currency, str) else self.currency
            if transfer.amount.currency not in currencies:
                return False
        if self.amount_at_least is not None and transfer.amount.minor_units < self.amount_at_least:
            return False
        return not (self.amount_at_most is not None and transfer.amount.minor_units > self.amount_at_most)


class Rule(BaseModel):
    """One rule: when it applies (``match``), what happens, and how the call is answered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    match: Match = Match()
    action: Action
    # ISO code: a status reason for reject, a return reason for return.
    reason: str | None = None
    # ACCP until this long after acceptance, then ACSC (settle and return).
    settle_after_seconds: float = Field(default=0, ge=0)
    # For return: the return arrives this long after settlement.
    return_after_seconds: float | None = Field(default=None, ge=0)
    answer: Answer = Answer.NORMAL
    # For answer normal: the acknowledgement comes this late (the transfer is recorded first).
    answer_delay_seconds: float = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.action is Action.REJECT:
            if self.reason not in STATUS_REASONS:
                raise ValueError(f"reject needs a reason, one of {', '.join(sorted(STATUS_REASONS))}")
            if self.settle_after_seconds:
                raise ValueError("settle_after_seconds does not apply to reject")
        elif self.action is Action.RETURN:
            if self.reason not in RETURN_REASONS:
                raise ValueError(f"return needs a reason, one of {', '.join(sorted(RETURN_REASONS))}")
            if self.return_after_seconds is None:
                raise ValueError("return needs return_after_seconds")
        elif self.reason is not None:
            raise ValueError("settle takes no reason")
        if self.return_after_seconds is not None and self.action is not Action.RETURN:
            raise ValueError("return_after_seconds applies to return only")
        if self.answer_delay_seconds and self.answer is not Answer.NORMAL:
            raise ValueError("answer_delay_seconds applies to answer normal only")
        return self


class RulesFile(BaseModel):
    """The whole file: a default and the rules in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Rule = Rule(name="default", action=Action.SETTLE)
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("default", mode="before")
    @classmethod
    def _default_named(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {"name": "default", **value}
        return value

    @model_validator(mode="after")
    def _defaults_match_all(self) -> RulesFile:
        if self.default.match != Match():
            raise ValueError("default applies to every transfer: it takes no match")
        names = [rule.name for rule in self.rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique: {duplicates}")
        return self


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to one transfer, decided when the scheme first receives it."""

    rule: str
    outcome: Outcome
    reason_code: str = ""
    settle_after: dt.timedelta = dt.timedelta(0)
    return_after: dt.timedelta | None = None
    answer: Answer = Answer.NORMAL
    answer_delay_seconds: float = 0.0


_OUTCOMES = {Action.SETTLE: Outcome.SETTLE, Action.REJECT: Outcome.REJECT, Action.RETURN: Outcome.RETURN}


@dataclass(frozen=True)
class RuleSet:
    """The loaded rules: :meth:`decide` gives a transfer its fate."""

    rules: tuple[Rule, ...]
    default: Rule

    def rule_for(self, transfer: CreditTransfer) -> Rule:
        """The first rule that fits, else the default."""
        return next((rule for rule in self.rules if rule.match.fits(transfer)), self.default)

    def decide(self, transfer: CreditTransfer) -> Decision:
        """The scheme's checks first (AC01, RC01), then the rules."""
        creditor = transfer.creditor_account
        if creditor.kind is AccountKind.IBAN and not is_iban(creditor.value):
            return Decision(IBAN_CHECK, Outcome.REJECT, "AC01")
        if not is_bic(transfer.creditor_agent):
            return Decision(BIC_CHECK, Outcome.REJECT, "RC01")
        rule = self.rule_for(transfer)
        return Decision(
            rule=rule.name,
            outcome=_OUTCOMES[rule.action],
            reason_code=rule.reason or "",
            settle_after=dt.timedelta(seconds=rule.settle_after_seconds),
            return_after=(
                dt.timedelta(seconds=rule.return_after_seconds) if rule.return_after_seconds is not None else None
            ),
            answer=rule.answer,
            answer_delay_seconds=rule.answer_delay_seconds,
        )


def parse_rules(document: Any) -> RuleSet:
    """Rules from a parsed YAML document; ValueError with a readable message when it is wrong."""
    try:
        parsed = RulesFile.model_validate(document or {})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'file'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise ValueError(f"invalid scheme rules: {problems}") from None
    return RuleSet(tuple(parsed.rules), parsed.default)


def load_rules(path: Path) -> RuleSet:
    """Read and check a rules file."""
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"invalid scheme rules: {path} is not YAML: {error}") from None
    return parse_rules(document)
