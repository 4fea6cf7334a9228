"""The partner event log's rules: event types, what a consent change tells the partner,
cursors and filters. Plain Python, no I/O.

A partner's events are numbered 1, 2, 3, ... in the order they were appended (identity
numbers them under the partner's head row), so "after cursor N" is exact: nothing is skipped
or repeated on any replica.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from meshlib.errors import InvalidArgument, OutOfRange

MAX_PAGE = 1000
DEFAULT_PAGE = 100


class EventType(enum.Enum):
    """What happened (the contract's EventType without its prefix)."""

    CONSENT_AUTHORISED = "CONSENT_AUTHORISED"
    CONSENT_REJECTED = "CONSENT_REJECTED"
    CONSENT_REVOKED = "CONSENT_REVOKED"
    CONSENT_PAUSED = "CONSENT_PAUSED"
    CONSENT_RESUMED = "CONSENT_RESUMED"
    CONSENT_LIMITS_CHANGED = "CONSENT_LIMITS_CHANGED"
    CONSENT_EXPIRING_SOON = "CONSENT_EXPIRING_SOON"
    CONSENT_EXPIRED = "CONSENT_EXPIRED"
    PAYMENT_STATE_CHANGED = "PAYMENT_STATE_CHANGED"
    ACCOUNT_DEBITED = "ACCOUNT_DEBITED"
    ACCOUNT_CREDITED = "ACCOUNT_CREDITED"
    APPLICATION_STATE_CHANGED = "APPLICATION_STATE_CHANGED"
    CUSTOMER_CAPABILITY_CHANGED = "CUSTOMER_CAPABILITY_CHANGED"
    CREDIT_OFFER_STATE_CHANGED = "CREDIT_OFFER_STATE_CHANGED"
    CREDIT_LINE_STATE_CHANGED = "CREDIT_LINE_STATE_CHANGED"


# The consent audit actions that the partner is told about (creating one is its own doing).
CONSENT_ACTIONS = {
    "consent.authorise": EventType.CONSENT_AUTHORISED,
    "consent.reject": EventType.CONSENT_REJECTED,
    "consent.revoke": EventType.CONSENT_REVOKED,
    "consent.pause": EventType.CONSENT_PAUSED,
    "consent.resume": EventType.CONSENT_RESUMED,
    "consent.narrow": EventType.CONSENT_LIMITS_CHANGED,
}


@dataclass(frozen=True)
class NewEvent:
    """An event to append. ``source_key``, unique across the bank, makes an event handed over
    twice (a relay's retry) append once; None for an event written in the transaction of its
    change, which cannot happen twice."""

    partner_id: str
    type: EventType
    resource: str
    consent_id: str
    event_time: dt.datetime
    data: dict[str, Any] = field(default_factory=dict)
    source_key: str | None = None
    # An account movement handed over for the account's customer (``partner_id`` empty): it
    # joins the log of each consent covering the account (:func:`movement_events`).
    customer_id: str = ""


@dataclass(frozen=True)
class PartnerEvent:
    """An appended event: its place in the partner's log and its stable id."""

    partner_id: str
    seq: int
    event_id: str
    type: EventType
    resource: str
    consent_id: str
    event_time: dt.datetime
    data: dict[str, Any]


def consent_event(action: str, consent_id: str, partner_id: str, now: dt.datetime) -> NewEvent | None:
    """The event a consent's audited change makes, or None."""
    kind = CONSENT_ACTIONS.get(action)
    if kind is None:
        return None
    return NewEvent(
        partner_id=partner_id,
        type=kind,
        resource=f"consents/{consent_id}",
        consent_id=consent_id,
        event_time=now,
    )


# The permission under which a consent's partner is told the account's movements (what
# ListTransactions shows it: amount, reference).
MOVEMENT_PERMISSION = "READ_TRANSACTIONS"
MOVEMENT_TYPES = frozenset({EventType.ACCOUNT_DEBITED, EventType.ACCOUNT_CREDITED})


@dataclass(frozen=True)
class ConsentCover:
    """What the movement rule needs of an authorised consent of the account's customer."""

    consent_id: str
    partner_id: str
    permissions: frozenset[str]
    account_ids: frozenset[str]
    paused: bool
    authorised_at: dt.datetime
    expires_at: dt.datetime


def movement_events(event: NewEvent, consents: Iterable[ConsentCover]) -> list[NewEvent]:
    """An account movement as it joins partners' logs: once per consent that covers the
    account, grants READ_TRANSACTIONS, and was authorised, not paused and not expired when the
    money moved; each with a source key of its own (a relay's retry appends it once)."""
    account_id = event.resource.removeprefix("accounts/")
    return [
        replace(
            event,
            partner_id=consent.partner_id,
            consent_id=consent.consent_id,
            customer_id="",
            source_key=f"{event.source_key}:{consent.consent_id}",
        )
        for consent in consents
        if MOVEMENT_PERMISSION in consent.permissions
        and account_id in consent.account_ids
        and not consent.paused
        and consent.authorised_at <= event.event_time < consent.expires_at
    ]


def expiry_event(
    kind: EventType, consent_id: str, partner_id: str, expires_at: dt.datetime, now: dt.datetime
) -> NewEvent:
    """CONSENT_EXPIRING_SOON or CONSENT_EXPIRED for one expire time of a consent."""
    return NewEvent(
        source_key=f"consent:{consent_id}:{kind.value}:{expires_at.isoformat()}",
        partner_id=partner_id,
        type=kind,
        resource=f"consents/{consent_id}",
        consent_id=consent_id,
        event_time=now,
        data={"expire_time": expires_at.isoformat()},
    )


def format_cursor(seq: int) -> str:
    """The partner-facing cursor of an event number (opaque to partners)."""
    return str(seq)


def parse_cursor(cursor: str, field_name: str) -> int:
    """An event number from a cursor; FIELD_INVALID naming ``field_name`` otherwise."""
    if not cursor.isdigit() or len(cursor) > 18:
        raise InvalidArgument.field(field_name, "malformed cursor: use the cursor of an event")
    return int(cursor)


def check_not_purged(after_seq: int, purged_seq: int) -> None:
    """A position whose next events were purged cannot be resumed: the partner resynchronises."""
    if after_seq < purged_seq:
        raise OutOfRange(
            "events after this cursor are no longer kept: read the resources again and continue after oldest_cursor",
            reason="CURSOR_EXPIRED",
            metadata={"oldest_cursor": format_cursor(purged_seq)},
        )


def check_page_size(requested: int) -> int:
    """The page size of a poll: the default for 0, at most MAX_PAGE."""
    if requested < 0 or requested > MAX_PAGE:
        raise InvalidArgument.field("max_events", f"must be between 0 and {MAX_PAGE}")
    return requested or DEFAULT_PAGE


@dataclass(frozen=True)
class EventFilter:
    """Which events a reader wants: types and consents (empty: all)."""

    types: frozenset[EventType] = frozenset()
    consent_ids: frozenset[str] = frozenset()

    def matches(self, event: PartnerEvent) -> bool:
        """Whether ``event`` passes."""
        if self.types and event.type not in self.types:
            return False
        return not self.consent_ids or event.consent_id in self.consent_ids


def event_filter(types: Iterable[str], consent_names: Iterable[str], field_prefix: str = "") -> EventFilter:
    """A filter from the request's type names and consent names, each checked."""
    chosen: set[EventType] = set()
    for name in types:
        try:
            chosen.add(EventType[name])
        except KeyError:
            raise InvalidArgument.field(f"{field_prefix}types", "unknown event type") from None
    consent_ids: set[str] = set()
    for name in consent_names:
        prefix, _, consent_id = name.partition("/")
        if prefix != "consents" or not consent_id or "/" in consent_id:
            raise InvalidArgument.field(f"{field_prefix}consents", "must be consents/{consent}")
        consent_ids.add(consent_id)
    return EventFilter(frozenset(chosen), frozenset(consent_ids))
