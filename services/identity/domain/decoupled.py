"""The decoupled flow's rules (OpenID Connect CIBA shape, poll mode). Plain rules, no I/O.

A wallet starts a decoupled authorisation for a customer it names; it gets a random
``auth_req_id`` (stored only as its digest), valid ``LIFETIME``, to poll the token endpoint
with at most once per ``INTERVAL``. The customer decides once, before it expires. Each poll
has exactly one outcome (:class:`PollOutcome`): pending, slow down (polled too soon: the
interval grows by ``SLOW_DOWN_STEP``), refused, expired, or tokens (once).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import uuid
from dataclasses import dataclass, replace

from meshlib.errors import (
    FailedPrecondition,
    FieldCollector,
    InvalidArgument,
    MeshError,
    PermissionDenied,
    ResourceExhausted,
)
from services.identity.domain.authorization import Decision

LIFETIME = dt.timedelta(minutes=10)
INTERVAL_SECONDS = 5
SLOW_DOWN_STEP_SECONDS = 5
MAX_INTERVAL_SECONDS = 60
_LOGIN_HINT = re.compile(r"^[\x21-\x7e]{1,64}$")
_BINDING_MESSAGE_MAX = 64


def check_start(login_hint: str, binding_message: str) -> None:
    """What the wallet sends: a login hint and a short one-line binding message."""
    errors = FieldCollector()
    errors.check(bool(_LOGIN_HINT.match(login_hint)), "login_hint", "must be 1..64 visible ASCII characters")
    errors.check(
        0 < len(binding_message) <= _BINDING_MESSAGE_MAX and binding_message.isprintable(),
        "binding_message",
        f"must be 1..{_BINDING_MESSAGE_MAX} printable characters on one line",
    )
    errors.raise_if_any()


class PollOutcome(enum.Enum):
    """What one poll of the token endpoint gets."""

    PENDING = "PENDING"
    SLOW_DOWN = "SLOW_DOWN"
    DENIED = "DENIED"
    EXPIRED = "EXPIRED"
    TOKENS = "TOKENS"


@dataclass(frozen=True)
class DecoupledRequest:
    """A decoupled authorisation. ``customer_id`` is None when the login hint named nobody:
    the wallet is not told, and the request simply expires."""

    request_id: str
    auth_req_id_hash: str
    partner_id: str
    client_id: str
    consent_id: str
    customer_id: str | None
    binding_message: str
    created_at: dt.datetime
    expires_at: dt.datetime
    interval_seconds: int = INTERVAL_SECONDS
    last_polled_at: dt.datetime | None = None
    decided_at: dt.datetime | None = None
    decision: Decision | None = None
    tokens_issued_at: dt.datetime | None = None

    @property
    def name(self) -> str:
        """``decoupledAuthorizations/{id}``."""
        return f"decoupledAuthorizations/{self.request_id}"

    def pending_for(self, customer_id: str, now: dt.datetime) -> bool:
        """Whether the customer may still decide it."""
        return self.customer_id == customer_id and self.decided_at is None and now < self.expires_at

    def decide(self, decision: Decision, now: dt.datetime) -> DecoupledRequest:
        """The customer's decision: once, in time."""
        if self.decided_at is not None:
            raise FailedPrecondition(
                "the decoupled authorisation was already decided",
                reason="INVALID_STATE_TRANSITION",
                metadata={"state": "DECIDED"},
            )
        if now >= self.expires_at:
            raise FailedPrecondition(
                "the decoupled authorisation expired before the customer decided",
                reason="AUTHORIZATION_REQUEST_EXPIRED",
                metadata={"name": self.name},
            )
        return replace(self, decided_at=now, decision=decision)

    def poll(self, now: dt.datetime) -> tuple[DecoupledRequest, PollOutcome]:
        """One poll: the request as it is afterwards, and the outcome. A decided request answers
        whenever polled; an undecided one counts the poll, and slows a poller that came too soon."""
        if self.tokens_issued_at is not None:
            raise InvalidArgument.field(
                "auth_req_id", "is unknown, expired, already used or not yours", reason="INVALID_GRANT"
            )
        if self.decision is Decision.APPROVE:
            return replace(self, tokens_issued_at=now, last_polled_at=now), PollOutcome.TOKENS
        if self.decision is Decision.REFUSE:
            return replace(self, last_polled_at=now), PollOutcome.DENIED
        if now >= self.expires_at:
            return replace(self, last_polled_at=now), PollOutcome.EXPIRED
        too_soon = self.last_polled_at is not None and now < self.last_polled_at + dt.timedelta(
            seconds=self.interval_seconds
        )
        if too_soon:
            interval = min(MAX_INTERVAL_SECONDS, self.interval_seconds + SLOW_DOWN_STEP_SECONDS)
            return replace(self, interval_seconds=interval, last_polled_at=now), PollOutcome.SLOW_DOWN
        return replace(self, last_polled_at=now), PollOutcome.PENDING

    def refusal(self, outcome: PollOutcome) -> MeshError:
        """The error a poll with ``outcome`` (anything but TOKENS) answers."""
        if outcome is PollOutcome.PENDING:
            pending = FailedPrecondition(
                "the customer has not decided yet; poll again after the interval",
                reason="AUTHORIZATION_PENDING",
                metadata={"interval": str(self.interval_seconds)},
            )
            pending.retry_after_seconds = float(self.interval_seconds)  # type: ignore[attr-defined]
            return pending
        if outcome is PollOutcome.SLOW_DOWN:
            return ResourceExhausted(
                "polled before the interval passed; the interval grew",
                reason="SLOW_DOWN",
                retry_after_seconds=float(self.interval_seconds),
                metadata={"interval": str(self.interval_seconds)},
            )
        if outcome is PollOutcome.DENIED:
            return PermissionDenied("the customer refused the authorisation", reason="ACCESS_DENIED")
        return FailedPrecondition("the decoupled authorisation expired", reason="EXPIRED_TOKEN")


def new_request(
    *,
    auth_req_id_hash: str,
    partner_id: str,
    client_id: str,
    consent_id: str,
    customer_id: str | None,
    binding_message: str,
    now: dt.datetime,
) -> DecoupledRequest:
    """A fresh decoupled authorisation, valid ``LIFETIME``."""
    return DecoupledRequest(
        request_id=uuid.uuid4().hex,
        auth_req_id_hash=auth_req_id_hash,
        partner_id=partner_id,
        client_id=client_id,
        consent_id=consent_id,
        customer_id=customer_id,
        binding_message=binding_message,
        created_at=now,
        expires_at=now + LIFETIME,
    )
