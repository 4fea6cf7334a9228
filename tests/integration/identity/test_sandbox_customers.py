"""A sandbox's published test customers (SQLite and PostgreSQL): with
OBM_SANDBOX_CUSTOMER_SECRETS identity creates a customer with a chosen TOTP secret, who then
signs in with codes of that secret; without it (production) a chosen secret is refused and
nothing is created."""

from __future__ import annotations

import time

import grpc

from meshlib import totp
from openbank.identity.v1 import customer_pb2
from tests.integration.identity.harness import PASSWORD, failure, request_id, start_identity, stop_identity

PUBLISHED = "ALICESANDBOXTOTPSECRETAAAAAAAAAA"


def _create(username: str, secret: str) -> customer_pb2.CreateCustomerRequest:
    return customer_pb2.CreateCustomerRequest(
        request_id=request_id(), username=username, password=PASSWORD, display_name="Test", totp_secret=secret
    )


async def test_a_sandbox_creates_customers_with_their_published_secret(database_url: str) -> None:
    identity = await start_identity(database_url, sandbox_customer_secrets=True)
    try:
        created = await identity.customers.CreateCustomer(
            _create("sandbox-alice", PUBLISHED), metadata=await identity.admin()
        )
        assert created.totp_secret == PUBLISHED
        code = totp.hotp(totp.from_base32(PUBLISHED), totp.time_step(time.time()))
        signed_in = await identity.customers.AuthenticateCustomer(
            customer_pb2.AuthenticateCustomerRequest(
                request_id=request_id(), username="sandbox-alice", password=PASSWORD, one_time_code=code
            ),
            metadata=await identity.bank_app(),
        )
        assert signed_in.customer == created.customer.name
        for bad in ("not base32!", "AAAA", "A" * 200):  # too short, too long, not base32
            assert await failure(
                identity.customers.CreateCustomer(_create("sandbox-bad", bad), metadata=await identity.admin())
            ) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    finally:
        await stop_identity(identity)


async def test_anywhere_else_a_chosen_secret_is_refused(database_url: str) -> None:
    identity = await start_identity(database_url)  # sandbox_customer_secrets defaults to false
    try:
        assert await failure(
            identity.customers.CreateCustomer(_create("prod-alice", PUBLISHED), metadata=await identity.admin())
        ) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
        # Nothing was created: the username is still free, and gets a random secret.
        created = await identity.customers.CreateCustomer(_create("prod-alice", ""), metadata=await identity.admin())
        assert created.totp_secret and created.totp_secret != PUBLISHED
    finally:
        await stop_identity(identity)
