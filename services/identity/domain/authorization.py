"""The redirect flow's rules (RFC 9126 PAR, FAPI 2.0): registered redirect URIs, pushed
authorisation requests and their one-time use. Plain rules, no I/O.

A pushed request lives ``REQUEST_URI_LIFETIME`` until the bank's web app opens it; opening
uses its request_uri up (a replayed link leads nowhere) and gives the customer
``DECISION_WINDOW`` to sign in and decide; it is decided once.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import re
import uuid
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from meshlib.errors import FailedPrecondition, FieldCollector, InvalidArgument
from services.identity.domain import consents as consent_rules
from services.identity.domain.secrets import new_secret

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
REQUEST_URI_LIFETIME = dt.timedelta(seconds=90)
DECISION_WINDOW = dt.timedelta(minutes=10)
MAX_REDIRECT_URIS = 10
MAX_REDIRECT_URI_LENGTH = 512
_STATE = re.compile(r"^[\x21-\x7e]{1,256}$")
_LOOPBACK_HOSTS = {"localhost"}


class Decision(enum.Enum):
    """The customer's answer."""

    APPROVE = "APPROVE"
    REFUSE = "REFUSE"


def checked_decision(decision: Decision | None, account_ids: tuple[str, ...]) -> tuple[Decision, tuple[str, ...]]:
    """A customer's decision and the accounts it names, as every authorisation page sends them:
    a decision is required, refusing names no account, approving names well-formed ones."""
    errors = FieldCollector()
    errors.check(decision is not None, "decision", "required: APPROVE or REFUSE")
    if decision is Decision.REFUSE:
        errors.check(not account_ids, "accounts", "must be empty when refusing")
    errors.raise_if_any()
    assert decision is not None
    return decision, consent_rules.check_account_names(account_ids) if decision is Decision.APPROVE else ()


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redirect_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be registered as a redirect URI, or None when it can."""
    if not uri or len(uri) > MAX_REDIRECT_URI_LENGTH:
        return f"must be 1..{MAX_REDIRECT_URI_LENGTH} characters"
    if any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7E for c in uri):
        return "must be visible ASCII without spaces"
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
        parts.port  # noqa: B018 (a bad port raises ValueError)
    except ValueError:
        return "must be an absolute URI"
    if parts.scheme not in ("https", "http") or not host:
        return "must be an absolute https URI"
    if parts.scheme == "http" and not _is_loopback(host):
        return "must use https (http only on a loopback host)"
    if parts.fragment or "#" in uri:
        return "must not have a fragment"
    if "@" in parts.netloc:
        return "must not carry user information"
    return None


def check_redirect_uris(uris: tuple[str, ...], field: str, errors: FieldCollector) -> tuple[str, ...]:
    """At most ``MAX_REDIRECT_URIS`` valid redirect URIs, duplicates dropped, order kept."""
    if len(uris) > MAX_REDIRECT_URIS:
        errors.add(field, f"at most {MAX_REDIRECT_URIS} redirect URIs")
    for index, uri in enumerate(uris):
        problem = redirect_uri_problem(uri)
        if problem:
            errors.add(f"{field}[{index}]", problem)
    return tuple(dict.fromkeys(uris))


def check_state(state: str, errors: FieldCollector) -> None:
    """OAuth ``state``: 1..256 visible ASCII characters, no spaces."""
    errors.check(bool(_STATE.match(state)), "state", "must be 1..256 visible ASCII characters without spaces")


def redirect_uri_not_registered() -> InvalidArgument:
    """The one answer for a redirect URI the partner did not register (compared exactly)."""
    return InvalidArgument.field(
        "redirect_uri", "is not one of the partner's registered redirect URIs", reason="REDIRECT_URI_NOT_REGISTERED"
    )


def request_uri_invalid() -> InvalidArgument:
    """The one answer for an unknown, expired, used or foreign request_uri (no oracle)."""
    return InvalidArgument.field(
        "request_uri", "unknown, expired or already used request_uri", reason="REQUEST_URI_INVALID"
    )


def new_request_uri() -> str:
    """``urn:ietf:params:oauth:request_uri:<256 random bits>``."""
    return REQUEST_URI_PREFIX + new_secret(32)


@dataclass(frozen=True)
class PushedRequest:
    """A pushed authorisation request. Only the request_uri's digest is stored."""

    request_id: str
    request_uri_hash: str
    partner_id: str
    client_id: str
    consent_id: str
    redirect_uri: str
    code_challenge: str
    state: str
    created_at: dt.datetime
    expires_at: dt.datetime
    opened_at: dt.datetime | None = None
    decide_before: dt.datetime | None = None
    decided_at: dt.datetime | None = None
    decision: Decision | None = None

    def open(self, client_id: str, now: dt.datetime) -> PushedRequest:
        """Open it for the customer (once, before it expires, by the client that pushed it)."""
        if self.opened_at is not None or now >= self.expires_at or client_id != self.client_id:
            raise request_uri_invalid()
        return replace(self, opened_at=now, decide_before=now + DECISION_WINDOW)

    def decide(self, decision: Decision, now: dt.datetime) -> PushedRequest:
        """Record the customer's decision (once, on an opened request, in time)."""
        if self.opened_at is None or self.decided_at is not None:
            state = "DECIDED" if self.decided_at is not None else "PUSHED"
            raise FailedPrecondition(
                "the authorisation request is not open for a decision",
                reason="INVALID_STATE_TRANSITION",
                metadata={"state": state},
            )
        assert self.decide_before is not None
        if now >= self.decide_before:
            raise FailedPrecondition(
                "the authorisation request expired before the customer decided",
                reason="AUTHORIZATION_REQUEST_EXPIRED",
                metadata={"name": f"authorizationRequests/{self.request_id}"},
            )
        return replace(self, decided_at=now, decision=decision)


def new_pushed_request(
    *,
    request_uri_hash: str,
    partner_id: str,
    client_id: str,
    consent_id: str,
    redirect_uri: str,
    code_challenge: str,
    state: str,
    now: dt.datetime,
) -> PushedRequest:
    """A fresh pushed request, valid ``REQUEST_URI_LIFETIME``."""
    return PushedRequest(
        request_id=uuid.uuid4().hex,
        request_uri_hash=request_uri_hash,
        partner_id=partner_id,
        client_id=client_id,
        consent_id=consent_id,
        redirect_uri=redirect_uri,
        code_challenge=code_challenge,
        state=state,
        created_at=now,
        expires_at=now + REQUEST_URI_LIFETIME,
    )
