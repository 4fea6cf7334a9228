"""The consent flow over real gRPC (UK Open Banking style): create -> SCA authorise ->
authorization_code + PKCE -> refresh rotation -> pause / narrow / revoke, with every
bad input of the flow answering its code and reason (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import time

import grpc
import jwt

from meshlib import totp
from meshlib.auth.consent_client import IdentityConsentLookup
from meshlib.errors import NotFound
from openbank.common.v1 import consent_permission_pb2, money_pb2
from openbank.identity.v1 import consent_pb2, customer_pb2, token_pb2
from tests.integration.identity.harness import (
    PASSWORD,
    Identity,
    bearer,
    failure,
    pkce_pair,
    request_id,
)

READ_BALANCES = consent_permission_pb2.CONSENT_PERMISSION_READ_BALANCES
READ_ACCOUNTS = consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS


async def test_full_flow_issues_a_consent_bound_token_and_rotates_refresh_tokens(identity: Identity) -> None:
    partner = await identity.register_partner()
    verifier, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    assert consent.state == consent_pb2.CONSENT_STATE_AWAITING_AUTHORISATION and not consent.accounts
    customer = await identity.create_customer()
    authorised = await identity.authorise(consent.name, customer, accounts=("accounts/acc-1", "accounts/acc-2"))
    assert authorised.consent.state == consent_pb2.CONSENT_STATE_AUTHORISED
    assert authorised.consent.customer == customer.name
    assert list(authorised.consent.accounts) == ["accounts/acc-1", "accounts/acc-2"]
    assert authorised.authorization_code

    tokens = await identity.exchange(partner, authorised.authorization_code, verifier)
    assert tokens.consent == consent.name and tokens.refresh_token
    assert list(tokens.scopes) == ["accounts:read"]
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    consent_id = consent.name.split("/")[1]
    assert claims["consent_id"] == consent_id and claims["customer_id"] == customer.name.split("/")[1]
    assert claims["sub"] == claims["partner_id"] == partner.partner_id
    introspected = await identity.introspect(tokens.access_token)
    assert introspected.active and introspected.consent_state == consent_pb2.CONSENT_STATE_AUTHORISED
    assert introspected.sub == customer.name

    refreshed = await identity.refresh(partner, tokens.refresh_token)
    assert refreshed.refresh_token != tokens.refresh_token and refreshed.consent == consent.name
    again = await identity.refresh(partner, refreshed.refresh_token)
    # Presenting a used refresh token revokes the whole family.
    assert await failure(identity.refresh(partner, tokens.refresh_token)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REFRESH_TOKEN_REUSED",
    )
    assert await failure(identity.refresh(partner, again.refresh_token)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_GRANT",
    )
    for access in (tokens.access_token, refreshed.access_token, again.access_token):
        assert (await identity.introspect(access)).active is False
    # Another client cannot use someone else's refresh token.
    other = await identity.register_partner()
    fresh, _ = await identity.consent_bound_token(partner)
    assert await failure(identity.refresh(other, fresh.refresh_token)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_GRANT",
    )


async def test_a_reused_code_is_refused_and_revokes_what_it_issued(identity: Identity) -> None:
    partner = await identity.register_partner()
    verifier, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    authorised = await identity.authorise(consent.name, await identity.create_customer())
    tokens = await identity.exchange(partner, authorised.authorization_code, verifier)
    assert (await identity.introspect(tokens.access_token)).active
    assert await failure(identity.exchange(partner, authorised.authorization_code, verifier)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_GRANT",
    )
    assert (await identity.introspect(tokens.access_token)).active is False
    assert await failure(identity.refresh(partner, tokens.refresh_token)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_GRANT",
    )
    assert await failure(identity.exchange(partner, "made-up-code", verifier)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_GRANT",
    )


async def test_wrong_pkce_verifier_fails_and_consumes_the_code(identity: Identity) -> None:
    partner = await identity.register_partner()
    verifier, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    authorised = await identity.authorise(consent.name, await identity.create_customer())
    wrong, _ = pkce_pair()
    assert await failure(identity.exchange(partner, authorised.authorization_code, wrong)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "PKCE_VERIFICATION_FAILED",
    )
    assert await failure(identity.exchange(partner, authorised.authorization_code, verifier)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_GRANT",
    )


async def test_the_code_is_bound_to_the_partner(identity: Identity) -> None:
    partner, thief = await identity.register_partner(), await identity.register_partner()
    verifier, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    authorised = await identity.authorise(consent.name, await identity.create_customer())
    assert await failure(identity.exchange(thief, authorised.authorization_code, verifier)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_GRANT",
    )
    assert (await identity.exchange(partner, authorised.authorization_code, verifier)).access_token


async def test_expired_code_and_expired_consent(identity: Identity) -> None:
    partner = await identity.register_partner()
    bank_app = await identity.bank_app()
    verifier, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge, expires_in=dt.timedelta(minutes=10))
    authorised = await identity.authorise(consent.name, await identity.create_customer())
    tokens = await identity.exchange(partner, authorised.authorization_code, verifier)
    late = await identity.create_consent(partner, challenge, expires_in=dt.timedelta(minutes=10))
    late_code = await identity.authorise(late.name, await identity.create_customer())
    waiting = await identity.create_consent(partner, challenge, expires_in=dt.timedelta(minutes=10))
    partner_token = await identity.client_token(partner)
    await identity.service_token("gateway")  # tokens issued after the clock jump would be "from the future"

    identity.clock.advance(minutes=11)
    assert await failure(identity.exchange(partner, late_code.authorization_code, verifier)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_GRANT",
    )
    assert await failure(identity.refresh(partner, tokens.refresh_token)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_GRANT",
    )
    got = await identity.consents.GetConsent(
        consent_pb2.GetConsentRequest(name=waiting.name), metadata=bearer(partner_token)
    )
    assert got.consent.state == consent_pb2.CONSENT_STATE_EXPIRED
    customer = await identity.create_customer()
    assert await failure(
        identity.consents.AuthoriseConsent(
            consent_pb2.AuthoriseConsentRequest(
                request_id=request_id(),
                name=waiting.name,
                username=customer.username,
                password=PASSWORD,
                one_time_code=customer.code(),
                accounts=["accounts/a1"],
            ),
            metadata=bank_app,
        )
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "CONSENT_EXPIRED")
    assert (await identity.introspect(tokens.access_token)).active is False


async def test_refresh_after_expiry_of_the_consent_is_consent_expired(identity: Identity) -> None:
    partner = await identity.register_partner()
    verifier, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge, expires_in=dt.timedelta(hours=2))
    authorised = await identity.authorise(consent.name, await identity.create_customer())
    tokens = await identity.exchange(partner, authorised.authorization_code, verifier)
    # Refresh tokens of this consent live until the consent expires; move just before that,
    # then the consent itself expires first only if refresh outlives it: narrow it to prove it.
    customer_name = authorised.consent.customer
    narrowed_expiry = consent_pb2.UpdateConsentLimitsRequest(
        request_id=request_id(), name=consent.name, customer=customer_name
    )
    narrowed_expiry.expire_time.FromDatetime(identity.clock() + dt.timedelta(minutes=5))
    await identity.consents.UpdateConsentLimits(narrowed_expiry, metadata=await identity.bank_app())
    identity.clock.advance(minutes=6)
    assert await failure(identity.refresh(partner, tokens.refresh_token)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CONSENT_EXPIRED",
    )


async def test_create_consent_rejects_bad_input(identity: Identity) -> None:
    partner = await identity.register_partner()
    token = bearer(await identity.client_token(partner))
    _, challenge = pkce_pair()

    def request(**fields: object) -> consent_pb2.CreateConsentRequest:
        values: dict[str, object] = {
            "request_id": request_id(),
            "permissions": [READ_ACCOUNTS],
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        values.update(fields)
        built = consent_pb2.CreateConsentRequest(**values)  # type: ignore[arg-type]
        if "expire_time" not in fields:
            built.expire_time.FromDatetime(identity.clock() + dt.timedelta(days=1))
        return built

    past = request()
    past.expire_time.FromDatetime(identity.clock() - dt.timedelta(days=1))
    too_far = request()
    too_far.expire_time.FromDatetime(identity.clock() + dt.timedelta(days=400))
    cases = [
        request(permissions=[]),
        request(permissions=[consent_permission_pb2.CONSENT_PERMISSION_NONE]),
        past,
        too_far,
        request(per_payment_limit=money_pb2.Money(currency_code="EUR", minor_units=-5)),
        request(period_limit=money_pb2.Money(currency_code="EUR", minor_units=500)),
        request(
            per_payment_limit=money_pb2.Money(currency_code="EUR", minor_units=5),
            period_limit=money_pb2.Money(currency_code="GBP", minor_units=500),
            period=consent_pb2.CONSENT_PERIOD_DAY,
        ),
        request(reads_per_day=-1),
        request(code_challenge=""),
        request(code_challenge_method="plain"),
    ]
    for bad in cases:
        assert await failure(identity.consents.CreateConsent(bad, metadata=token)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
        ), bad
    good = request()
    first = await identity.consents.CreateConsent(good, metadata=token)
    assert (await identity.consents.CreateConsent(good, metadata=token)) == first
    good.reads_per_day = 3
    assert await failure(identity.consents.CreateConsent(good, metadata=token)) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )


async def test_consents_are_private_to_their_partner(identity: Identity) -> None:
    owner, other = await identity.register_partner(), await identity.register_partner()
    consent = await identity.create_consent(owner, pkce_pair()[1])
    owner_token = bearer(await identity.client_token(owner))
    other_token = bearer(await identity.client_token(other))
    got = await identity.consents.GetConsent(consent_pb2.GetConsentRequest(name=consent.name), metadata=owner_token)
    assert got.consent == consent
    assert await failure(
        identity.consents.GetConsent(consent_pb2.GetConsentRequest(name=consent.name), metadata=other_token)
    ) == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")
    assert await failure(
        identity.consents.RevokeConsent(
            consent_pb2.RevokeConsentRequest(request_id=request_id(), name=consent.name), metadata=other_token
        )
    ) == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")
    # The shared lookup adapter (service token with consents:read) sees it for its owner only.
    lookup = IdentityConsentLookup(identity.channel, lambda: identity.service_token("gateway"))
    view = await lookup.get(consent.name.split("/")[1], partner_id=owner.partner_id)
    assert view.state == "AWAITING_AUTHORISATION" and view.permissions == {"READ_ACCOUNTS", "READ_BALANCES"}
    assert view.per_payment_limit_minor == 10_000 and view.limit_currency == "EUR" and view.reads_per_day == 100
    try:
        await lookup.get(consent.name.split("/")[1], partner_id=other.partner_id)
        raise AssertionError("another partner's consent must be NOT_FOUND")
    except NotFound:
        pass


async def test_partner_revocation_kills_bound_tokens(identity: Identity) -> None:
    partner = await identity.register_partner()
    tokens, consent_name = await identity.consent_bound_token(partner)
    revoke = consent_pb2.RevokeConsentRequest(request_id=request_id(), name=consent_name)
    answer = await identity.consents.RevokeConsent(revoke, metadata=bearer(await identity.client_token(partner)))
    assert answer.consent.state == consent_pb2.CONSENT_STATE_REVOKED
    again = consent_pb2.RevokeConsentRequest(request_id=request_id(), name=consent_name)
    assert (
        await identity.consents.RevokeConsent(again, metadata=bearer(await identity.client_token(partner)))
    ).consent.state == (consent_pb2.CONSENT_STATE_REVOKED)
    assert (await identity.introspect(tokens.access_token)).active is False
    assert await failure(identity.refresh(partner, tokens.refresh_token)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_GRANT",
    )
    assert await failure(
        identity.consents.GetConsent(
            consent_pb2.GetConsentRequest(name=consent_name), metadata=bearer(tokens.access_token)
        )
    ) == (grpc.StatusCode.PERMISSION_DENIED, "CONSENT_REVOKED")


async def test_customer_side_pause_resume_narrow_list_reject_and_revoke(identity: Identity) -> None:
    partner = await identity.register_partner()
    bank_app = await identity.bank_app()
    verifier, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    customer = await identity.create_customer()
    authorised = await identity.authorise(consent.name, customer, accounts=("accounts/a1", "accounts/a2"))
    tokens = await identity.exchange(partner, authorised.authorization_code, verifier)
    pause = consent_pb2.PauseConsentRequest(request_id=request_id(), name=consent.name, customer=customer.name)
    paused = await identity.consents.PauseConsent(pause, metadata=bank_app)
    assert paused.consent.paused and (await identity.consents.PauseConsent(pause, metadata=bank_app)) == paused
    assert (await identity.introspect(tokens.access_token)).active is False
    assert await failure(
        identity.consents.PauseConsent(
            consent_pb2.PauseConsentRequest(request_id=request_id(), name=consent.name, customer=customer.name),
            metadata=bank_app,
        )
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE_TRANSITION")
    resumed = await identity.consents.ResumeConsent(
        consent_pb2.ResumeConsentRequest(request_id=request_id(), name=consent.name, customer=customer.name),
        metadata=bank_app,
    )
    assert not resumed.consent.paused and (await identity.introspect(tokens.access_token)).active

    narrow = consent_pb2.UpdateConsentLimitsRequest(
        request_id=request_id(),
        name=consent.name,
        customer=customer.name,
        reads_per_day=10,
        per_payment_limit=money_pb2.Money(currency_code="EUR", minor_units=5_000),
        accounts=["accounts/a1"],
        permissions=[READ_BALANCES],
    )
    narrowed = await identity.consents.UpdateConsentLimits(narrow, metadata=bank_app)
    assert narrowed.consent.reads_per_day == 10 and list(narrowed.consent.accounts) == ["accounts/a1"]
    assert narrowed.consent.per_payment_limit.minor_units == 5_000
    for widening in (
        {"per_payment_limit": money_pb2.Money(currency_code="EUR", minor_units=9_000)},
        {"reads_per_day": 50},
        {"accounts": ["accounts/a2"]},
        {"permissions": [READ_ACCOUNTS]},
    ):
        request = consent_pb2.UpdateConsentLimitsRequest(
            request_id=request_id(), name=consent.name, customer=customer.name, **widening
        )  # type: ignore[arg-type]
        assert await failure(identity.consents.UpdateConsentLimits(request, metadata=bank_app)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "CONSENT_WIDENING_NOT_ALLOWED",
        ), widening
    stranger = await identity.create_customer()
    assert await failure(
        identity.consents.PauseConsent(
            consent_pb2.PauseConsentRequest(request_id=request_id(), name=consent.name, customer=stranger.name),
            metadata=bank_app,
        )
    ) == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")

    rejected_consent = await identity.create_consent(partner, challenge)
    rejected = await identity.consents.RejectConsent(
        consent_pb2.RejectConsentRequest(request_id=request_id(), name=rejected_consent.name, customer=customer.name),
        metadata=bank_app,
    )
    assert rejected.consent.state == consent_pb2.CONSENT_STATE_REJECTED
    assert await failure(identity.authorise(rejected_consent.name, stranger)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE_TRANSITION",
    )

    listed = await identity.consents.ListCustomerConsents(
        consent_pb2.ListCustomerConsentsRequest(customer=customer.name, page_size=1), metadata=bank_app
    )
    assert [c.name for c in listed.consents] == [rejected_consent.name] and listed.next_page_token
    # The customer sees which wallet each consent is for.
    assert dict(listed.partner_display_names) == {partner.name: "Wallet"}
    rest = await identity.consents.ListCustomerConsents(
        consent_pb2.ListCustomerConsentsRequest(customer=customer.name, page_size=1, page_token=listed.next_page_token),
        metadata=bank_app,
    )
    assert [c.name for c in rest.consents] == [consent.name] and not rest.next_page_token
    assert await failure(
        identity.consents.ListCustomerConsents(
            consent_pb2.ListCustomerConsentsRequest(customer=customer.name, page_token="bogus"), metadata=bank_app
        )
    ) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID")

    revoked = await identity.consents.CustomerRevokeConsent(
        consent_pb2.CustomerRevokeConsentRequest(request_id=request_id(), name=consent.name, customer=customer.name),
        metadata=bank_app,
    )
    assert revoked.consent.state == consent_pb2.CONSENT_STATE_REVOKED
    assert (await identity.introspect(tokens.access_token)).active is False
    assert await failure(
        identity.consents.ResumeConsent(
            consent_pb2.ResumeConsentRequest(request_id=request_id(), name=consent.name, customer=customer.name),
            metadata=bank_app,
        )
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "CONSENT_REVOKED")


async def test_authorise_needs_valid_sca_and_locks_out_after_five_failures(identity: Identity) -> None:
    partner = await identity.register_partner()
    bank_app = await identity.bank_app()
    admin = await identity.admin()
    consent = await identity.create_consent(partner, pkce_pair()[1])
    customer = await identity.create_customer()

    def attempt(
        password: str = PASSWORD, code: str | None = None, accounts: tuple[str, ...] = ("accounts/a1",)
    ) -> consent_pb2.AuthoriseConsentRequest:
        return consent_pb2.AuthoriseConsentRequest(
            request_id=request_id(),
            name=consent.name,
            username=customer.username,
            password=password,
            one_time_code=code if code is not None else customer.code(),
            accounts=list(accounts),
        )

    wrong_code = totp.hotp(customer.seed, totp.time_step(time.time()) + 5)
    assert await failure(identity.consents.AuthoriseConsent(attempt(code=wrong_code), metadata=bank_app)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SCA_FAILED",
    )
    for accounts in ((), ("wallets/x",)):
        assert await failure(
            identity.consents.AuthoriseConsent(attempt(code=wrong_code, accounts=accounts), metadata=bank_app)
        ) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    unknown = attempt(code=wrong_code)
    unknown.username = "nobody-here"
    assert await failure(identity.consents.AuthoriseConsent(unknown, metadata=bank_app)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SCA_FAILED",
    )
    for _ in range(4):
        assert await failure(
            identity.consents.AuthoriseConsent(attempt(password="wrong password!!", code=wrong_code), metadata=bank_app)
        ) == (grpc.StatusCode.PERMISSION_DENIED, "SCA_FAILED")
    # Locked now: even the right password and code are refused.
    assert await failure(identity.consents.AuthoriseConsent(attempt(), metadata=bank_app)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CUSTOMER_LOCKED",
    )
    unlocked = await identity.customers.UnlockCustomer(
        customer_pb2.UnlockCustomerRequest(request_id=request_id(), name=customer.name), metadata=admin
    )
    assert unlocked.customer.status == customer_pb2.CUSTOMER_STATUS_ACTIVE
    assert (await identity.consents.AuthoriseConsent(attempt(), metadata=bank_app)).authorization_code
    assert await failure(
        identity.consents.GetConsent(consent_pb2.GetConsentRequest(name=consent.name), metadata=bank_app)
    ) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")


async def test_authorise_replay_returns_the_same_code(identity: Identity) -> None:
    partner = await identity.register_partner()
    bank_app = await identity.bank_app()
    verifier, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    customer = await identity.create_customer()
    request = consent_pb2.AuthoriseConsentRequest(
        request_id=request_id(),
        name=consent.name,
        username=customer.username,
        password=PASSWORD,
        one_time_code=customer.code(),
        accounts=["accounts/a1"],
    )
    first = await identity.consents.AuthoriseConsent(request, metadata=bank_app)
    assert await identity.consents.AuthoriseConsent(request, metadata=bank_app) == first
    tokens = await identity.exchange(partner, first.authorization_code, verifier)
    assert tokens.access_token
    # A consent-bound token's scopes can be narrowed, never widened.
    assert await failure(
        identity.tokens.IssueToken(
            token_pb2.IssueTokenRequest(
                grant_type=token_pb2.GRANT_TYPE_REFRESH_TOKEN,
                client_id=partner.client_id,
                client_secret=partner.secret,
                refresh_token=tokens.refresh_token,
                scopes=["payments:write"],
            )
        )
    ) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SCOPE")


async def test_housekeeping_purges_what_expired(identity: Identity) -> None:
    partner = await identity.register_partner()
    tokens, _ = await identity.consent_bound_token(partner)
    housekeeping = identity.server.components.housekeeping
    assert await housekeeping.purge_once() == 0
    identity.clock.advance(days=60)
    assert await housekeeping.purge_once() >= 3  # the code, the refresh token, the access-token records
    assert await failure(identity.refresh(partner, tokens.refresh_token)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_GRANT",
    )


async def test_listing_by_state_uses_the_state_as_of_now(identity: Identity) -> None:
    partner = await identity.register_partner()
    bank_app = await identity.bank_app()
    customer = await identity.create_customer()
    short = await identity.create_consent(partner, pkce_pair()[1], expires_in=dt.timedelta(minutes=5))
    long = await identity.create_consent(partner, pkce_pair()[1], expires_in=dt.timedelta(days=5))
    await identity.authorise(short.name, customer)
    await identity.authorise(long.name, customer)
    identity.clock.advance(minutes=10)

    async def listed(state: int) -> list[str]:
        answer = await identity.consents.ListCustomerConsents(
            consent_pb2.ListCustomerConsentsRequest(customer=customer.name, state=state), metadata=bank_app
        )
        return [c.name for c in answer.consents]

    assert await listed(consent_pb2.CONSENT_STATE_EXPIRED) == [short.name]
    assert await listed(consent_pb2.CONSENT_STATE_AUTHORISED) == [long.name]
    assert await listed(consent_pb2.CONSENT_STATE_UNSPECIFIED) == [long.name, short.name]


async def test_revoking_a_refresh_token_revokes_its_family(identity: Identity) -> None:
    partner = await identity.register_partner()
    tokens, _ = await identity.consent_bound_token(partner)
    await identity.tokens.RevokeToken(
        token_pb2.RevokeTokenRequest(
            client_id=partner.client_id,
            client_secret=partner.secret,
            token=tokens.refresh_token,
            token_type_hint=token_pb2.TOKEN_TYPE_HINT_REFRESH_TOKEN,
        )
    )
    assert (await identity.introspect(tokens.access_token)).active is False
    assert await failure(identity.refresh(partner, tokens.refresh_token)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_GRANT",
    )
