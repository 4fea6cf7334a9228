"""Mandates at identity over gRPC, on SQLite and PostgreSQL: a partner asks for one, it is
stored and read back exactly (GetConsent, the customer's list, what resource servers see), the
customer authorises it for exactly one account, and bad mandates are refused naming the field."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from meshlib.auth.consent_client import consent_view
from meshlib.grpc_errors import decode_rpc_error
from openbank.common.v1 import consent_permission_pb2, mandate_period_pb2, money_pb2
from openbank.identity.v1 import consent_pb2
from tests.integration.identity.harness import Identity, bearer, pkce_pair, request_id

PAY = [
    consent_permission_pb2.CONSENT_PERMISSION_INITIATE_PAYMENTS,
    consent_permission_pb2.CONSENT_PERMISSION_CONFIRM_FUNDS,
]


def _eur(minor: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", minor_units=minor)


def _request(identity: Identity, challenge: str, mandate: consent_pb2.Mandate) -> consent_pb2.CreateConsentRequest:
    request = consent_pb2.CreateConsentRequest(
        request_id=request_id(),
        permissions=PAY,
        code_challenge=challenge,
        code_challenge_method="S256",
        mandate=mandate,
    )
    request.expire_time.FromDatetime(identity.clock() + dt.timedelta(days=30))
    return request


async def test_a_mandate_is_kept_exactly_and_authorised_for_one_account(identity: Identity) -> None:
    partner = await identity.register_partner()
    token = bearer(await identity.client_token(partner))
    verifier, challenge = pkce_pair()
    asked = consent_pb2.Mandate(
        type=consent_pb2.MANDATE_TYPE_SWEEPING,
        creditor_wallet=partner.name,
        maximum_individual_amount=_eur(5_000),
        periodic_limits=[
            consent_pb2.MandatePeriodicLimit(
                period_type=mandate_period_pb2.MANDATE_PERIOD_TYPE_WEEK,
                period_alignment=mandate_period_pb2.MANDATE_PERIOD_ALIGNMENT_CONSENT,
                maximum_amount=_eur(20_000),
            )
        ],
    )
    created = (await identity.consents.CreateConsent(_request(identity, challenge, asked), metadata=token)).consent
    stored = created.mandate
    assert (stored.creditor_wallet, stored.maximum_individual_amount, list(stored.periodic_limits)) == (
        partner.name,
        _eur(5_000),
        list(asked.periodic_limits),
    )
    assert stored.valid_from_time == created.create_time and stored.valid_to_time == created.expire_time

    customer = await identity.create_customer()
    with pytest.raises(grpc.aio.AioRpcError) as two_accounts:
        await identity.authorise(created.name, customer, ("accounts/acc-1", "accounts/acc-2"))
    error = decode_rpc_error(two_accounts.value)
    assert (two_accounts.value.code(), error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    authorised = await identity.authorise(created.name, customer, ("accounts/acc-1",))
    assert authorised.consent.mandate == stored and list(authorised.consent.accounts) == ["accounts/acc-1"]
    read = (
        await identity.consents.GetConsent(consent_pb2.GetConsentRequest(name=created.name), metadata=token)
    ).consent
    assert read.mandate == stored
    listed = await identity.consents.ListCustomerConsents(
        consent_pb2.ListCustomerConsentsRequest(customer=customer.name), metadata=await identity.bank_app()
    )
    assert [c.mandate for c in listed.consents] == [stored]
    view = consent_view(read)  # what the payment service enforces
    assert view.mandate is not None and view.mandate.creditor_wallet_partner_id == partner.partner_id
    assert view.mandate.periodic_limits[0].alignment == "CONSENT"
    tokens = await identity.exchange(partner, authorised.authorization_code, verifier)
    assert tokens.access_token


async def test_a_bad_mandate_is_refused_naming_the_field(identity: Identity) -> None:
    partner = await identity.register_partner()
    other = await identity.register_partner()
    token = bearer(await identity.client_token(partner))
    _, challenge = pkce_pair()
    bad = consent_pb2.Mandate(
        type=consent_pb2.MANDATE_TYPE_SWEEPING,
        creditor_wallet=other.name,  # another partner's wallet
        maximum_individual_amount=_eur(5_000),
        periodic_limits=[
            consent_pb2.MandatePeriodicLimit(
                period_type=mandate_period_pb2.MANDATE_PERIOD_TYPE_FORTNIGHT,
                period_alignment=mandate_period_pb2.MANDATE_PERIOD_ALIGNMENT_CALENDAR,
                maximum_amount=_eur(1),
            )
        ],
    )
    request = _request(identity, challenge, bad)
    request.permissions.append(consent_permission_pb2.CONSENT_PERMISSION_READ_BALANCES)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.consents.CreateConsent(request, metadata=token)
    error = decode_rpc_error(refused.value)
    assert error.reason == "FIELD_INVALID"
    assert {v.field for v in error.violations} == {  # type: ignore[attr-defined]
        "permissions",
        "mandate.creditor_wallet",
        "mandate.periodic_limits[0].period_alignment",
    }
