"""The risk decision taken for every payment before money moves: explainable signals, rules
as versioned configuration, one of four outcomes.

Each rule looks at one signal and either adds to the payment's score or names an outcome
outright (``outcome: refuse`` for a hard velocity limit). The score against the file's
thresholds gives an outcome too; the stricter of the two wins. The decision keeps which
rules fired, the score and the rules' version, so the audit trail, the partner's error and
the operator's review queue all say why.

Plain Python: no gRPC, no SQL, no clock (the caller passes the moment).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.payment.domain.checks import CustomerHistory


class RiskOutcome(enum.IntEnum):
    """What happens to the payment; a larger value is stricter."""

    ALLOW = 0
    STEP_UP = 1
    REVIEW = 2
    REFUSE = 3


@dataclass(frozen=True, slots=True)
class PsuContext:
    """What the partner says about the customer present when the payment was asked for."""

    ip_address: str = ""
    device_id: str = ""
    user_agent: str = ""

    @property
    def present(self) -> bool:
        """The partner sent the customer's IP address and device."""
        return bool(self.ip_address and self.device_id)


@dataclass(frozen=True, slots=True)
class IdentitySignals:
    """What identity knows about the customer lately; None: not known (identity did not answer)."""

    failed_sign_ins: int | None = None
    consent_changed_seconds_ago: float | None = None


@dataclass(frozen=True)
class RiskSignals:
    """Everything the rules look at, for one payment."""

    partner_id: str
    amount_minor: int
    history: CustomerHistory
    moment: dt.datetime
    psu: PsuContext = field(default_factory=PsuContext)
    identity: IdentitySignals = field(default_factory=IdentitySignals)
    # The partner's risk tier from its registration (identity); "": not known.
    partner_tier: str = ""

    def explained(self, tier: str) -> dict[str, str]:
        """The signals as text, for the audit trail and the review queue."""
        changed = self.identity.consent_changed_seconds_ago
        return {
            "amount_minor": str(self.amount_minor),
            "customer_average_minor": f"{self.history.average_amount_minor:.0f}",
            "customer_history_count": str(self.history.history_count),
            "new_creditor": str(not self.history.paid_beneficiary_before).lower(),
            "payments_in_windows": ",".join(f"{s}s:{n}" for s, n in sorted(self.history.payments_in_window.items())),
            "hour_utc": str(self.moment.astimezone(dt.UTC).hour),
            "psu_ip_address": self.psu.ip_address,
            "psu_device_id": self.psu.device_id,
            "partner_risk_tier": tier,
            "failed_sign_ins": "" if self.identity.failed_sign_ins is None else str(self.identity.failed_sign_ins),
            "consent_changed_seconds_ago": "" if changed is None else f"{changed:.0f}",
        }


Check = Callable[["RiskRule", RiskSignals, "RiskRules"], bool]


def _velocity(rule: RiskRule, s: RiskSignals, _: RiskRules) -> bool:
    return s.history.payments_in_window.get(rule.window_seconds, 0) + 1 > rule.max_count


def _new_creditor(rule: RiskRule, s: RiskSignals, _: RiskRules) -> bool:
    return not s.history.paid_beneficiary_before and s.amount_minor > rule.threshold_minor


def _amount_vs_average(rule: RiskRule, s: RiskSignals, _: RiskRules) -> bool:
    h = s.history
    return h.history_count >= rule.min_history and s.amount_minor > rule.multiplier * h.average_amount_minor


def _time_of_day(rule: RiskRule, s: RiskSignals, _: RiskRules) -> bool:
    hour = s.moment.astimezone(dt.UTC).hour
    if rule.from_hour <= rule.to_hour:
        return rule.from_hour <= hour < rule.to_hour
    return hour >= rule.from_hour or hour < rule.to_hour  # across midnight


def _psu_absent(rule: RiskRule, s: RiskSignals, _: RiskRules) -> bool:
    return not s.psu.present


def _partner_tier(rule: RiskRule, s: RiskSignals, rules: RiskRules) -> bool:
    return rules.tier_of(s.partner_id, s.partner_tier) in rule.tiers


def _failed_sign_ins(rule: RiskRule, s: RiskSignals, _: RiskRules) -> bool:
    return (s.identity.failed_sign_ins or 0) >= rule.min_count


def _consent_changed(rule: RiskRule, s: RiskSignals, _: RiskRules) -> bool:
    ago = s.identity.consent_changed_seconds_ago
    return ago is not None and ago < rule.within_seconds


CHECKS: dict[str, Check] = {
    "max_payments_per_window": _velocity,
    "new_beneficiary_threshold": _new_creditor,
    "amount_vs_average": _amount_vs_average,
    "time_of_day": _time_of_day,
    "psu_context_missing": _psu_absent,
    "partner_risk_tier": _partner_tier,
    "failed_sign_ins": _failed_sign_ins,
    "consent_changed_recently": _consent_changed,
}
# Kinds whose hard refusal keeps the contract's older reason (a velocity limit).
VELOCITY_KINDS = frozenset({"max_payments_per_window", "new_beneficiary_threshold", "amount_vs_average"})
OUTCOME_NAMES = {"allow": RiskOutcome.ALLOW, "step_up": RiskOutcome.STEP_UP, "review": RiskOutcome.REVIEW}
OUTCOME_NAMES["refuse"] = RiskOutcome.REFUSE


@dataclass(frozen=True)
class RiskRule:
    """One configured rule: ``kind`` picks the signal, the other fields parameterise it; it adds
    ``score`` when it fires, or names ``outcome`` outright."""

    id: str
    kind: str
    score: int = 0
    outcome: str = ""
    window_seconds: int = 60
    max_count: int = 0
    threshold_minor: int = 0
    multiplier: float = 0.0
    min_history: int = 1
    from_hour: int = 0
    to_hour: int = 0
    tiers: tuple[str, ...] = ()
    min_count: int = 1
    within_seconds: int = 0

    def fires(self, signals: RiskSignals, rules: RiskRules) -> bool:
        """True when this payment trips the rule."""
        return CHECKS[self.kind](self, signals, rules)


@dataclass(frozen=True)
class Thresholds:
    """A score at or above each one gives that outcome."""

    step_up: int = 40
    review: int = 70
    refuse: int = 100

    def outcome(self, score: int) -> RiskOutcome:
        """The outcome the score alone gives."""
        if score >= self.refuse:
            return RiskOutcome.REFUSE
        if score >= self.review:
            return RiskOutcome.REVIEW
        if score >= self.step_up:
            return RiskOutcome.STEP_UP
        return RiskOutcome.ALLOW


@dataclass(frozen=True)
class RiskDecision:
    """The outcome and why: rules fired (ids), the score, the rules' version, the signals."""

    outcome: RiskOutcome
    score: int
    rules_version: str
    fired: tuple[str, ...] = ()
    signals: dict[str, str] = field(default_factory=dict)
    deciding_kind: str = ""  # the kind of the rule that refused outright, if one did

    @property
    def reason(self) -> str:
        """The partner's stable ErrorInfo reason for this outcome (a velocity limit keeps its own)."""
        if self.outcome is RiskOutcome.REFUSE:
            return "VELOCITY_RULE_TRIGGERED" if self.deciding_kind in VELOCITY_KINDS else "RISK_REFUSED"
        return {RiskOutcome.STEP_UP: "AUTHORISATION_REQUIRED", RiskOutcome.REVIEW: "HELD_FOR_REVIEW"}.get(
            self.outcome, ""
        )

    def metadata(self) -> dict[str, str]:
        """ErrorInfo metadata: which rules, the rules' version (never the signals' values)."""
        return {"rule": ",".join(self.fired), "rules_version": self.rules_version, "score": str(self.score)}

    def audit_details(self) -> dict[str, object]:
        """What the audit trail keeps of the decision."""
        return {
            "risk_outcome": self.outcome.name,
            "risk_score": self.score,
            "risk_rules": list(self.fired),
            "rules_version": self.rules_version,
            "signals": dict(self.signals),
        }


@dataclass(frozen=True)
class RiskRules:
    """A version of the rule set."""

    version: str = "none"
    rules: tuple[RiskRule, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    partner_tiers: dict[str, str] = field(default_factory=dict)

    @property
    def windows(self) -> set[int]:
        """The count windows the customer's history must cover."""
        return {r.window_seconds for r in self.rules if r.kind == "max_payments_per_window"}

    def tier_of(self, partner_id: str, registered: str = "") -> str:
        """The partner's risk tier: its registration's; else (not known) the file's
        ``partner_tiers``, else LOW."""
        return registered or self.partner_tiers.get(partner_id, "LOW")

    def decide(self, signals: RiskSignals) -> RiskDecision:
        """Every rule against the signals; the stricter of the score's outcome and any named one."""
        score, fired, named, deciding = 0, [], RiskOutcome.ALLOW, ""
        for rule in self.rules:
            if not rule.fires(signals, self):
                continue
            fired.append(rule.id)
            score += rule.score
            if rule.outcome:
                forced = OUTCOME_NAMES[rule.outcome]
                if forced > named:
                    named, deciding = forced, rule.kind
        outcome = max(named, self.thresholds.outcome(score))
        if outcome is RiskOutcome.REFUSE and named is not RiskOutcome.REFUSE:
            deciding = ""  # refused by the score, not by a hard limit
        return RiskDecision(
            outcome,
            score,
            self.version,
            tuple(fired),
            signals.explained(self.tier_of(signals.partner_id, signals.partner_tier)),
            deciding,
        )


_RULE_FIELDS = frozenset(RiskRule.__dataclass_fields__)


def _from_velocity_format(document: Any) -> Any:
    """A file of the earlier velocity format (no version, rules with a name): each rule refuses."""
    entries = document.get("rules", []) if isinstance(document, dict) else document
    rules = [
        {"id": e.get("name"), "outcome": "refuse", **{k: v for k, v in e.items() if k != "name"}}
        if isinstance(e, dict)
        else e
        for e in entries or []
    ]
    return {"version": "velocity-rules", "rules": rules}


def parse_risk_rules(document: Any) -> RiskRules:
    """Rules from a parsed YAML document; ValueError naming what is wrong."""
    if isinstance(document, list) or (isinstance(document, dict) and "version" not in document):
        document = _from_velocity_format(document)
    if not isinstance(document, dict) or not str(document.get("version", "")).strip():
        raise ValueError("the risk rules file needs a version")
    unknown_top = set(document) - {"version", "thresholds", "rules", "partner_tiers"}
    if unknown_top:
        raise ValueError(f"unknown top-level keys {sorted(unknown_top)}")
    thresholds = Thresholds(**(document.get("thresholds") or {}))
    if not 0 < thresholds.step_up <= thresholds.review <= thresholds.refuse:
        raise ValueError("thresholds must be 0 < step_up <= review <= refuse")
    rules, seen = [], set()
    for index, entry in enumerate(document.get("rules") or []):
        if not isinstance(entry, dict) or entry.get("kind") not in CHECKS or not entry.get("id"):
            raise ValueError(f"risk rule #{index} needs an id and a kind in {sorted(CHECKS)}")
        unknown = set(entry) - _RULE_FIELDS
        if unknown:
            raise ValueError(f"risk rule {entry['id']!r}: unknown fields {sorted(unknown)}")
        if entry["id"] in seen:
            raise ValueError(f"risk rule {entry['id']!r} appears twice")
        seen.add(entry["id"])
        if entry.get("outcome", "") not in {"", *OUTCOME_NAMES}:
            raise ValueError(f"risk rule {entry['id']!r}: outcome must be one of {sorted(OUTCOME_NAMES)}")
        if not entry.get("outcome") and int(entry.get("score", 0)) <= 0:
            raise ValueError(f"risk rule {entry['id']!r} needs a positive score or an outcome")
        if "tiers" in entry:
            entry = {**entry, "tiers": tuple(entry["tiers"])}
        rules.append(RiskRule(**entry))
    tiers = {str(k): str(v) for k, v in (document.get("partner_tiers") or {}).items()}
    return RiskRules(str(document["version"]), tuple(rules), thresholds, tiers)


def load_risk_rules(path: Path) -> RiskRules:
    """Read and check the rules file."""
    return parse_risk_rules(yaml.safe_load(path.read_text()))
