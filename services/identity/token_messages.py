"""What the token endpoint takes and answers: client credentials, a token request, the
tokens issued, an introspection, and the endpoint's settings."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ClientCredentials:
    """How a client authenticates in the request body."""

    client_id: str
    client_secret: str = field(default="", repr=False)
    client_assertion: str = field(default="", repr=False)
    client_assertion_type: str = ""
    # Lower-case hex SHA-256 of the TLS client certificate of the connection, if any.
    certificate_sha256: str | None = None


@dataclass(frozen=True)
class TokenRequest:
    """An IssueToken request in domain terms."""

    grant_type: str | None
    credentials: ClientCredentials
    scopes: tuple[str, ...] = ()
    code: str = field(default="", repr=False)
    code_verifier: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)
    auth_req_id: str = field(default="", repr=False)


@dataclass(frozen=True)
class IssuedTokens:
    """What IssueToken answers."""

    access_token: str = field(repr=False)
    expires_in: int
    scopes: tuple[str, ...]
    refresh_token: str = field(default="", repr=False)
    consent_id: str | None = None


@dataclass(frozen=True)
class Introspection:
    """RFC 7662 answer; when it is inactive only ``partner_status`` or ``consent_state`` and
    ``consent_paused`` may be set, naming the cause."""

    active: bool
    client_id: str = ""
    partner_id: str | None = None
    partner_status: str | None = None
    scopes: tuple[str, ...] = ()
    consent_id: str | None = None
    consent_state: str | None = None
    consent_paused: bool = False
    customer_id: str | None = None
    expires_at: dt.datetime | None = None
    issued_at: dt.datetime | None = None
    subject: str = ""
    jti: str = ""


@dataclass(frozen=True)
class TokenSettings:
    """Issuer, audience and lifetimes."""

    issuer: str
    audience: str
    access_token_lifetime: dt.timedelta
    refresh_token_lifetime: dt.timedelta
