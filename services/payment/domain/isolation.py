"""Dynamic isolation: what a customer does not use is switched off until they ask for it again.

Per customer and capability the bank keeps when it was last used. A payment type the customer
has not used for the policy's period is PAUSED, payments to creditors they never paid before
are PAUSED after a period without one, and the customer's daily limit is LOWERED to a floor
after a period in which every day's payments stayed under a low-use mark. A payment needing a
paused capability, or above the lowered limit, is refused with a reason telling the partner the
customer can restore it at the bank; restoring (with strong authentication, at the bank) makes
it ACTIVE and counts as a use, so the period starts again.

The policy is versioned configuration (isolation_policy.yaml, reloadable like the risk rules).
Plain Python: no gRPC, no SQL, no clock (the caller passes the moment).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from meshlib.errors import FailedPrecondition

NEW_CREDITOR = "NEW_CREDITOR"
DAILY_LIMIT = "DAILY_LIMIT"
PAYMENT_TYPES = ("WALLET_TOP_UP", "TRANSFER", "BILL_PAYMENT", "EXTERNAL_TRANSFER")
CAPABILITIES = (NEW_CREDITOR, DAILY_LIMIT, *PAYMENT_TYPES)
# The reasons a payment is refused for (the payment's audit trail keeps each refusal).
REFUSALS = frozenset({"CAPABILITY_PAUSED", "DAILY_LIMIT_LOWERED"})
# Who made a change the bank's policy made (not the customer, not an operator).
SWEEP = "isolation-sweep"
# Where the partner tells the customer to go (the bank's page for it).
RESTORE_AT = "the bank's website or app, Limits and features"


class Status(enum.Enum):
    """Where a capability of a customer stands."""

    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    LOWERED = "LOWERED"  # the daily limit only


@dataclass(frozen=True)
class CapabilityState:
    """One capability of one customer: since when the bank knows it, when it was last used
    (None: never), and whether it is paused or lowered, why, and by whom."""

    customer_id: str
    capability: str
    since: dt.datetime
    last_used_at: dt.datetime | None = None
    status: Status = Status.ACTIVE
    limit_minor: int | None = None
    currency: str = ""
    reason: str = ""
    policy_version: str = ""
    changed_at: dt.datetime | None = None
    changed_by: str = ""

    def idle_since(self) -> dt.datetime:
        """From when its period of non-use counts: its last use, else since the bank knew it."""
        return self.last_used_at if self.last_used_at is not None else self.since


class Standing(Protocol):
    """Where a capability stands, as a payment's check needs it (a CapabilityState, or the
    lighter view the payment register reads)."""

    @property
    def status(self) -> Status: ...

    @property
    def limit_minor(self) -> int | None: ...

    @property
    def currency(self) -> str: ...


@dataclass(frozen=True)
class DailyLimitRule:
    """The daily limit is lowered to ``floor_minor`` after ``after_days`` days in which no day's
    payments reached ``low_use_below_minor`` (all in ``currency``)."""

    after_days: float
    low_use_below_minor: int
    floor_minor: int
    currency: str


@dataclass(frozen=True)
class IsolationPolicy:
    """A version of the policy: each capability's period of non-use before it is paused
    (None: never paused), and the daily limit's rule (None: never lowered)."""

    version: str = "none"
    pause_after_days: Mapping[str, float] = dataclasses.field(default_factory=dict)
    daily_limit: DailyLimitRule | None = None

    def evaluate(
        self, states: Iterable[CapabilityState], peak_day_minor: int, now: dt.datetime
    ) -> list[CapabilityState]:
        """What changes for one customer now: the ACTIVE capabilities unused for their period,
        PAUSED; the daily limit LOWERED when the customer's busiest day of the period (in the
        rule's currency, ``peak_day_minor``) stayed under the low-use mark; and what the sweep
        isolated under an earlier version that this one no longer would, ACTIVE again
        (:meth:`_released`). Nothing the customer does while isolated lifts it: only a restore."""
        changes = []
        for state in states:
            if state.status is not Status.ACTIVE:
                release = self._released(state, now)
                if release is not None:
                    changes.append(release)
                continue
            idle = now - state.idle_since()
            if state.capability == DAILY_LIMIT:
                rule = self.daily_limit
                if rule is None or idle < dt.timedelta(days=rule.after_days):
                    continue
                if peak_day_minor >= rule.low_use_below_minor:
                    continue
                changes.append(
                    dataclasses.replace(
                        state,
                        status=Status.LOWERED,
                        limit_minor=rule.floor_minor,
                        currency=rule.currency,
                        reason=f"low use for {_days(rule.after_days)}",
                        policy_version=self.version,
                        changed_at=now,
                        changed_by=SWEEP,
                    )
                )
                continue
            days = self.pause_after_days.get(state.capability)
            if days is None or idle < dt.timedelta(days=days):
                continue
            never = state.last_used_at is None
            changes.append(
                dataclasses.replace(
                    state,
                    status=Status.PAUSED,
                    reason=("never used" if never else "not used") + f" for {_days(days)}",
                    policy_version=self.version,
                    changed_at=now,
                    changed_by=SWEEP,
                )
            )
        return changes

    def _released(self, state: CapabilityState, now: dt.datetime) -> CapabilityState | None:
        """ACTIVE again when the bank loosened the policy: the capability is no longer isolated,
        or its period is now longer than it has been unused. Judged by the policy alone (never by
        the low-use mark, which the lowered limit itself keeps the customer under); the period
        goes on counting from the last real use."""
        if state.changed_by != SWEEP or state.policy_version == self.version:
            return None
        idle = now - state.idle_since()
        if state.status is Status.LOWERED:
            rule = self.daily_limit
            if rule is not None and idle >= dt.timedelta(days=rule.after_days):
                return None
        else:
            days = self.pause_after_days.get(state.capability)
            if days is not None and idle >= dt.timedelta(days=days):
                return None
        return dataclasses.replace(
            state,
            status=Status.ACTIVE,
            limit_minor=None,
            currency="",
            reason=f"released: policy {self.version} no longer isolates it",
            policy_version=self.version,
            changed_at=now,
            changed_by=SWEEP,
        )

    def lookback_start(self, now: dt.datetime) -> dt.datetime:
        """The first moment whose payments the daily limit's low-use check reads."""
        days = self.daily_limit.after_days if self.daily_limit is not None else 0.0
        return now - dt.timedelta(days=days)


def _days(days: float) -> str:
    return f"{days:g} days" if days >= 1 else f"{days * 86400:g} seconds"


def restored(state: CapabilityState, now: dt.datetime, actor: str) -> CapabilityState:
    """ACTIVE again at the customer's request: it counts as a use (its period starts again)."""
    return dataclasses.replace(
        state,
        status=Status.ACTIVE,
        limit_minor=None,
        currency="",
        reason="restored by the customer",
        last_used_at=now,
        changed_at=now,
        changed_by=actor,
    )


def check_payment(
    states: Mapping[str, Standing],
    *,
    payment_type: str,
    new_creditor: bool,
    amount_minor: int,
    currency: str,
    spent_today_minor: int,
) -> None:
    """Refuse a payment that needs a paused capability (CAPABILITY_PAUSED) or goes above the
    lowered daily limit (DAILY_LIMIT_LOWERED): both say the customer can restore it at the bank."""
    for capability in (payment_type, NEW_CREDITOR) if new_creditor else (payment_type,):
        state = states.get(capability)
        if state is not None and state.status is Status.PAUSED:
            raise FailedPrecondition(
                f"the customer's bank has paused {capability} for this customer (unused); "
                f"the customer can restore it at {RESTORE_AT}",
                reason="CAPABILITY_PAUSED",
                metadata={"capability": capability, "restore": "customer_at_bank"},
            )
    limit = states.get(DAILY_LIMIT)
    if limit is None or limit.status is not Status.LOWERED or limit.limit_minor is None:
        return
    if currency != limit.currency or spent_today_minor + amount_minor > limit.limit_minor:
        raise FailedPrecondition(
            "the payment is above the customer's daily limit, lowered for low use; "
            f"the customer can restore it at {RESTORE_AT}",
            reason="DAILY_LIMIT_LOWERED",
            metadata={
                "limit_minor_units": str(limit.limit_minor),
                "limit_currency": limit.currency,
                "restore": "customer_at_bank",
            },
        )


def needs_spent_today(states: Mapping[str, Standing]) -> bool:
    """Whether the check needs the customer's payments of today (only under a lowered limit)."""
    limit = states.get(DAILY_LIMIT)
    return limit is not None and limit.status is Status.LOWERED


def used_by(payment_type: str, new_creditor: bool) -> tuple[str, ...]:
    """The capabilities a payment uses."""
    return (payment_type, NEW_CREDITOR) if new_creditor else (payment_type,)


_TOP = {"version", "new_creditor", "payment_types", "daily_limit"}


def parse_isolation_policy(document: Any) -> IsolationPolicy:
    """The policy from a parsed YAML document; ValueError naming what is wrong."""
    if not isinstance(document, dict) or not str(document.get("version", "")).strip():
        raise ValueError("the isolation policy needs a version")
    unknown = set(document) - _TOP
    if unknown:
        raise ValueError(f"unknown top-level keys {sorted(unknown)}")
    pause: dict[str, float] = {}
    new_creditor = document.get("new_creditor") or {}
    if new_creditor:
        pause[NEW_CREDITOR] = _positive(new_creditor, "pause_after_days", "new_creditor")
    types = document.get("payment_types") or {}
    if types:
        days = _positive(types, "pause_after_days", "payment_types")
        for name in types.get("types") or PAYMENT_TYPES:
            if name not in PAYMENT_TYPES:
                raise ValueError(f"payment_types.types: {name!r} is not one of {list(PAYMENT_TYPES)}")
            pause[name] = days
    daily = document.get("daily_limit") or None
    rule = None
    if daily is not None:
        currency = str(daily.get("currency", ""))
        if len(currency) != 3 or not currency.isupper():
            raise ValueError("daily_limit.currency must be an ISO currency code")
        rule = DailyLimitRule(
            after_days=_positive(daily, "after_days", "daily_limit"),
            low_use_below_minor=int(_positive(daily, "low_use_below_minor", "daily_limit")),
            floor_minor=int(_positive(daily, "floor_minor", "daily_limit")),
            currency=currency,
        )
    return IsolationPolicy(str(document["version"]), pause, rule)


def _positive(section: Any, key: str, where: str) -> float:
    if not isinstance(section, dict) or key not in section:
        raise ValueError(f"{where}.{key} is required")
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{where}.{key} must be a positive number")
    return float(value)


def load_isolation_policy(path: Path) -> IsolationPolicy:
    """Read and check the policy file."""
    return parse_isolation_policy(yaml.safe_load(path.read_text()))
