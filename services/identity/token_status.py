"""A token's status from identity's state: what IntrospectToken, CheckTokenStatuses and
identity's own revocation check answer about a token whose claims were already verified.

The claims of a token (its id, partner, consent, scopes, expiry) are fixed by its signature;
what can change while it is in use is in the store: revoked, the partner suspended or its
scopes narrowed, the consent revoked, paused or expired. So a token verified once need not
have its signature verified again to learn its status (identity's stream re-checks and the
mesh's batched checks of open streams ask for thousands of statuses a minute).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from meshlib.auth.context import Caller
from meshlib.cache import BoundedMap
from meshlib.errors import InvalidArgument, MeshError
from services.identity.common import Clock, UnitOfWorkFactory
from services.identity.domain.consents import ConsentState
from services.identity.internal_clients import InternalClient
from services.identity.token_messages import Introspection
from services.identity.unit_of_work import IdentityUnitOfWork

# Identity's own short-lived service token (keys_service.OwnServiceToken).
OWN_SUBJECT = "service:identity"
OWN_CLIENT_ID = "identity"
MAX_TOKENS_PER_CHECK = 1_000
# A token whose signature was verified is trusted that long without verifying it again
# (bounded, so that a key withdrawn from the JWKS in an emergency stops its tokens soon).
VERIFIED_FOR_SECONDS = 300.0


async def answer_from_state(
    uow: IdentityUnitOfWork,
    caller: Caller,
    now: dt.datetime,
    internal: dict[str, InternalClient],
    memo: dict[tuple[str, str], Any] | None = None,
) -> Introspection:
    """What ``caller``'s token (claims verified) is worth now, read in ``uow``."""
    if caller.subject == OWN_SUBJECT and caller.client_id == OWN_CLIENT_ID:
        # Identity's own service token: signed here, never recorded, nothing to revoke.
        return Introspection(
            active=True,
            client_id=caller.client_id,
            scopes=tuple(sorted(caller.scopes)),
            expires_at=caller.expires_at,
            subject=caller.subject,
            jti=caller.token_id,
        )
    memo = {} if memo is None else memo  # tokens read together, partners and consents once per batch
    key = ("token", caller.token_id)
    record = memo[key] if key in memo else await uow.grants.access_token(caller.token_id)
    if record is None:
        return Introspection(active=False)
    partner = consent = None
    if caller.partner_id:
        key = ("partner", caller.partner_id)
        partner = memo[key] if key in memo else memo.setdefault(key, await uow.partners.get(caller.partner_id))
    if caller.consent_id:
        key = ("consent", caller.consent_id)
        consent = memo[key] if key in memo else memo.setdefault(key, await uow.consents.get(caller.consent_id))
    if record.revoked_at is not None:
        # A token that died with its consent says so, as the bus does (CONSENT_REVOKED).
        ended = consent.current(now) if consent is not None else None
        if ended is not None and ended.state.final:
            return Introspection(active=False, consent_state=ended.state.value)
        return Introspection(active=False)
    # An inactive answer still says when the partner or consent is the cause, so every
    # verifier refuses with the reason the invalidation bus would give (PARTNER_SUSPENDED,
    # CONSENT_REVOKED, ...), with Redis or without.
    if caller.partner_id:
        if partner is None:
            return Introspection(active=False)
        if not partner.active:
            return Introspection(active=False, partner_status=partner.status.value)
        if partner.tokens_valid_after is not None and record.issued_at < partner.tokens_valid_after:
            return Introspection(active=False)
        if not caller.scopes <= frozenset(partner.allowed_scopes):
            # The operator took a scope away: tokens carrying it stop working (UpdatePartner).
            return Introspection(active=False)
    elif not caller.subject.startswith("service:") or caller.client_id not in internal:
        return Introspection(active=False)
    if caller.consent_id:
        if consent is None:
            return Introspection(active=False)
        consent = consent.current(now)
        if consent.state is not ConsentState.AUTHORISED or consent.paused:
            return Introspection(active=False, consent_state=consent.state.value, consent_paused=consent.paused)
    return Introspection(
        active=True,
        client_id=caller.client_id,
        partner_id=caller.partner_id,
        partner_status=partner.status.value if partner else None,
        scopes=tuple(sorted(caller.scopes)),
        consent_id=caller.consent_id,
        consent_state=consent.state.value if consent else None,
        consent_paused=consent.paused if consent else False,
        customer_id=caller.customer_id,
        expires_at=caller.expires_at,
        issued_at=record.issued_at,
        subject=caller.subject,
        jti=caller.token_id,
    )


@dataclass(frozen=True)
class _Verified:
    at: float
    caller: Caller


class TokenStatuses:
    """Statuses of many tokens at once, in one unit of work (see the module)."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        internal_clients: dict[str, InternalClient],
        verify_claims: Callable[[str], Awaitable[Caller]],
        clock: Clock,
        *,
        capacity: int = 20_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uow = uow
        self._internal = internal_clients
        self._verify_claims = verify_claims
        self._clock = clock
        self._monotonic = monotonic
        # Keyed by the exact token text: only that signed text is trusted, never its claims
        # presented otherwise.
        self._verified: BoundedMap[str, _Verified] = BoundedMap(capacity)

    async def of_tokens(self, tokens: Sequence[str]) -> list[Introspection]:
        """The status of each token (as IntrospectToken answers), in order."""
        if not tokens or len(tokens) > MAX_TOKENS_PER_CHECK or any(not token for token in tokens):
            raise InvalidArgument.field("tokens", f"between 1 and {MAX_TOKENS_PER_CHECK} non-empty tokens")
        callers = [await self._claims(token) for token in tokens]
        known = [caller for caller in callers if caller is not None]
        answers = iter(await self.of_callers(known))
        return [next(answers) if caller is not None else Introspection(active=False) for caller in callers]

    async def of_callers(self, callers: Sequence[Caller]) -> list[Introspection]:
        """The status of each verified caller's token, in order, from one unit of work."""
        if not callers:
            return []
        now = self._clock()
        async with self._uow(read_only=True) as uow:
            memo: dict[tuple[str, str], Any] = {}
            records = await uow.grants.access_tokens([caller.token_id for caller in callers])
            memo.update({("token", caller.token_id): records.get(caller.token_id) for caller in callers})
            return [await answer_from_state(uow, caller, now, self._internal, memo) for caller in callers]

    async def _claims(self, token: str) -> Caller | None:
        now = self._monotonic()
        known = self._verified.get(token)
        if known is not None and now - known.at < VERIFIED_FOR_SECONDS and self._clock() < known.caller.expires_at:
            return known.caller
        # Not verified lately, or past its exp since: the verifier decides again (and refuses an
        # expired token as expired; the stream holding it ends at its exp by its own timer).
        try:
            caller = await self._verify_claims(token)
        except MeshError:
            return None
        self._verified.put(token, _Verified(now, caller))
        return caller
