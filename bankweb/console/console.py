"""The console's use cases (plain Python, no HTTP): operator sign-in and sessions, what each
page shows, and the actions, each checked against the operator's role and recorded in the
console's audit trail with the operator's name before the answer goes back.

The services enforce the console client's scopes on every call; which operator may do what
is decided here (``operators.may``), and a refusal is recorded too.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bankweb.console.operators import OperatorDirectory, OperatorRefused, may
from bankweb.console.ports import (
    AuditQuery,
    AuditRow,
    HeldRow,
    Mesh,
    ParticipantRow,
    PaymentRow,
    Reconciliation,
    WindowRow,
)
from bankweb.ports import Session, SessionStore
from bankweb.sessions import AttemptLimiter, rotate_session
from meshlib.errors import MeshError

log = logging.getLogger("bankweb.console")

IN_FLIGHT = ("RECEIVED", "ACCEPTED", "SETTLEMENT_IN_PROCESS", "AWAITING_AUTHORISATION", "PENDING_REVIEW")
SIGNED_IN_FOR = dt.timedelta(hours=8)  # then sign in again, however active


class NotSignedIn(Exception):
    """The page needs a signed-in operator."""


class Forbidden(Exception):
    """The operator's role does not allow the action."""


class ActionFailed(Exception):
    """The mesh refused the action; ``message`` is safe to show."""


class SignInFailed(Exception):
    """Sign-in refused; ``message`` is safe to show (never which credential was wrong)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Journal(Protocol):
    """The console's own audit trail (``audit_store.ConsoleAuditTrail``, shared by the replicas)."""

    def append(self, content: dict[str, Any]) -> None: ...

    async def flush(self) -> None: ...

    async def records(self, query: AuditQuery) -> list[AuditRow]: ...


@dataclass(frozen=True)
class SignedIn:
    """The operator behind a session."""

    username: str
    role: str

    @property
    def actor(self) -> str:
        """How the audit trail names the operator."""
        return f"operator:{self.username}"

    def may(self, action: str) -> bool:
        """Whether the role allows ``action``."""
        return may(self.role, action)


class Console:
    """Sign-in, pages and actions for the bank's operators."""

    def __init__(
        self,
        mesh: Mesh,
        operators: OperatorDirectory,
        sessions: SessionStore,
        limiter: AttemptLimiter,
        journal: Journal,
        session_ttl_seconds: int,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._mesh = mesh
        self._operators = operators
        self._sessions = sessions
        self._limiter = limiter
        self._journal = journal
        self._ttl = session_ttl_seconds
        self._clock = clock

    # ---- sign-in and sessions ------------------------------------------------------------

    async def new_session(self, old: Session | None) -> Session:
        """A session for the sign-in form (its CSRF token)."""
        return (
            old if old is not None and "csrf" in old.data else await rotate_session(self._sessions, old, {}, self._ttl)
        )

    async def sign_in(
        self, session: Session | None, username: str, password: str, one_time_code: str, address: str
    ) -> Session:
        """Password + one-time code; a new session id on success; every attempt recorded."""
        if not self._limiter.allow(address, username):
            raise SignInFailed("Too many attempts. Wait a few minutes before trying again.", status=429)
        try:
            account = self._operators.authenticate(username, password, one_time_code)
        except OperatorRefused as refused:
            self._record(
                "console.sign_in",
                f"operators/{username[:64]}",
                "LOCKED" if refused.locked else "REFUSED",
                actor=f"operator:{username[:64]}",
                details={"address": address},
            )
            if refused.locked:
                raise SignInFailed("This operator is locked after too many failed attempts.", status=403) from None
            raise SignInFailed("Those details did not match.") from None
        data = {"operator": account.username, "role": account.role, "signed_in_at": self._clock().isoformat()}
        fresh = await rotate_session(self._sessions, session, data, self._ttl)
        self._record(
            "console.sign_in",
            f"operators/{account.username}",
            "OK",
            actor=f"operator:{account.username}",
            details={"role": account.role, "address": address},
        )
        return fresh

    async def operator(self, session: Session | None) -> SignedIn:
        """The signed-in operator (the session kept alive), or NotSignedIn."""
        if session is None or "operator" not in session.data:
            raise NotSignedIn()
        signed_in_at = dt.datetime.fromisoformat(session.data["signed_in_at"])
        if self._clock() - signed_in_at > SIGNED_IN_FOR:
            await self._sessions.delete(session.session_id)
            raise NotSignedIn()
        await self._sessions.save(session.session_id, session.data, self._ttl)
        return SignedIn(session.data["operator"], session.data["role"])

    async def remember(self, session: Session) -> None:
        """Save what a page put in the session (a notice to show once), for another idle period."""
        await self._sessions.save(session.session_id, session.data, self._ttl)

    async def sign_out(self, session: Session | None) -> None:
        """Forget the session."""
        if session is not None:
            if "operator" in session.data:
                who = str(session.data["operator"])
                self._record("console.sign_out", f"operators/{who}", "OK", actor=f"operator:{who}")
            await self._sessions.delete(session.session_id)

    # ---- pages ---------------------------------------------------------------------------

    async def participants(self) -> list[ParticipantRow]:
        """Every participant against its cap, the most used first."""
        rows = await self._mesh.participants()
        return sorted(rows, key=lambda row: (-row.used_percent, row.name, row.currency))

    async def windows(self, currency: str) -> list[WindowRow]:
        """The currency's windows, newest first."""
        return await self._mesh.windows(currency)

    async def payments(self, partner: str = "", limit: int = 50) -> tuple[list[PaymentRow], list[PaymentRow]]:
        """Payments in flight, and rejected ones with their reasons (newest first)."""
        in_flight = await self._mesh.payments(IN_FLIGHT, partner, limit)
        rejected = await self._mesh.payments(("REJECTED",), partner, limit)
        return in_flight, rejected

    async def held(self, limit: int = 50) -> list[HeldRow]:
        """Payments the risk rules hold for review, oldest first (decided with the CLI)."""
        return await self._mesh.held_payments(limit)

    async def audit(self, query: AuditQuery) -> list[AuditRow]:
        """The services' trails, or the console's own (operators' actions)."""
        if query.service == "console":
            return await self._journal.records(query)  # flushed first: what was just done is in it
        return await self._mesh.audit(query)

    # ---- actions -------------------------------------------------------------------------

    async def close_window(self, who: SignedIn, currency: str) -> str:
        """Close the currency's open window (the next opens at once); the notice to show."""
        request_id = self._allowed(who, "window.close", f"currencies/{currency}")
        closed, opened = await self._acted(
            who,
            "window.close",
            f"currencies/{currency}",
            request_id,
            self._mesh.as_role(who.role).close_window(currency, request_id),
        )
        return f"Closed {closed.name} ({closed.obligation_count} obligations); {opened.name} is open."

    async def settle_window(self, who: SignedIn, name: str) -> str:
        """Settle a closed window; the notice to show."""
        request_id = self._allowed(who, "window.settle", name)
        reference = f"console/{who.username}/{request_id[:12]}"
        settled = await self._acted(
            who,
            "window.settle",
            name,
            request_id,
            self._mesh.as_role(who.role).settle_window(name, request_id, reference),
        )
        return f"Settled {settled.name}: each participant's net moved in the ledger."

    async def reconcile_window(self, who: SignedIn, name: str) -> Reconciliation:
        """Compare a window with the ledger."""
        request_id = self._allowed(who, "window.reconcile", name)
        report: Reconciliation = await self._acted(
            who, "window.reconcile", name, request_id, self._mesh.as_role(who.role).reconcile_window(name)
        )
        return report

    async def update_cap(self, who: SignedIn, participant: str, currency: str, cap: int) -> str:
        """Set a participant's net debit cap (admin)."""
        request_id = self._allowed(who, "participant.cap", participant, {"currency": currency, "cap": cap})
        await self._acted(
            who,
            "participant.cap",
            participant,
            request_id,
            self._mesh.as_role(who.role).update_cap(participant, currency, cap, request_id),
            {"currency": currency, "cap": cap},
        )
        return f"The net debit cap of {participant} in {currency} is now {cap / 100:,.2f}."

    def _allowed(self, who: SignedIn, action: str, resource: str, details: dict[str, Any] | None = None) -> str:
        """A request id for the action, or Forbidden (recorded) when the role does not allow it."""
        request_id = uuid.uuid4().hex
        if not who.may(action):
            self._record(
                f"console.{action}",
                resource,
                "DENIED",
                actor=who.actor,
                details={"role": who.role, "request_id": request_id, **(details or {})},
            )
            raise Forbidden()
        return request_id

    async def _acted(
        self,
        who: SignedIn,
        action: str,
        resource: str,
        request_id: str,
        call: Any,
        details: dict[str, Any] | None = None,
    ) -> Any:
        """Run the action's call; record what happened with the operator's name either way."""
        base = {"role": who.role, "request_id": request_id, **(details or {})}
        try:
            result = await call
        except MeshError as error:
            self._record(f"console.{action}", resource, error.reason, actor=who.actor, details=base)
            raise ActionFailed(f"The mesh refused: {error.reason} ({error})") from None
        extra = {"clean": result.clean} if isinstance(result, Reconciliation) else {}
        self._record(f"console.{action}", resource, "OK", actor=who.actor, details={**base, **extra})
        try:
            await self._journal.flush()  # stored before the operator sees the answer
        except Exception:
            log.exception("operator action not yet in the audit store (kept queued, retried)")
        return result

    def _record(
        self, action: str, resource: str, outcome: str, *, actor: str, details: dict[str, Any] | None = None
    ) -> None:
        self._journal.append(
            {
                "service": "console",
                "occurred_at": self._clock(),
                "action": action,
                "outcome": outcome,
                "resource": resource,
                "actor": actor,
                "actor_kind": "operator",
                "client_id": "console",
                "details": details or {},
            }
        )
        log.info("operator action", extra={"action": action, "outcome": outcome, "actor": actor})
