"""CustomerService over real gRPC: creation, SCA (password + TOTP), code reuse, lock-out."""

from __future__ import annotations

import time

import grpc

from meshlib import totp
from openbank.identity.v1 import customer_pb2
from tests.integration.identity.harness import PASSWORD, Identity, failure, request_id


async def test_create_get_and_validation(identity: Identity) -> None:
    admin = await identity.admin()
    request = customer_pb2.CreateCustomerRequest(
        request_id=request_id(), username="ada.lovelace", password=PASSWORD, display_name="Ada"
    )
    created = await identity.customers.CreateCustomer(request, metadata=admin)
    assert created.customer.status == customer_pb2.CUSTOMER_STATUS_ACTIVE
    assert len(totp.from_base32(created.totp_secret)) == 20
    assert created.otpauth_uri.startswith("otpauth://totp/") and "period=30" in created.otpauth_uri
    replay = await identity.customers.CreateCustomer(request, metadata=admin)
    assert replay.customer == created.customer and replay.totp_secret == "" and replay.otpauth_uri == ""
    got = await identity.customers.GetCustomer(
        customer_pb2.GetCustomerRequest(name=created.customer.name), metadata=admin
    )
    assert got.customer == created.customer
    taken = customer_pb2.CreateCustomerRequest(
        request_id=request_id(), username="ada.lovelace", password=PASSWORD, display_name="Ada 2"
    )
    assert await failure(identity.customers.CreateCustomer(taken, metadata=admin)) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "RESOURCE_ALREADY_EXISTS",
    )
    for username, password in (("AB", PASSWORD), ("ok-name", "short")):
        bad = customer_pb2.CreateCustomerRequest(
            request_id=request_id(), username=username, password=password, display_name="X"
        )
        assert await failure(identity.customers.CreateCustomer(bad, metadata=admin)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
        )
    assert await failure(
        identity.customers.GetCustomer(customer_pb2.GetCustomerRequest(name="customers/nope"), metadata=admin)
    ) == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")


async def test_authenticate_accepts_each_code_once(identity: Identity) -> None:
    bank_app = await identity.bank_app()
    customer = await identity.create_customer()
    code = customer.code()

    def request(one_time_code: str, password: str = PASSWORD) -> customer_pb2.AuthenticateCustomerRequest:
        return customer_pb2.AuthenticateCustomerRequest(
            request_id=request_id(), username=customer.username, password=password, one_time_code=one_time_code
        )

    first = request(code)
    answer = await identity.customers.AuthenticateCustomer(first, metadata=bank_app)
    assert answer.customer == customer.name
    # The same request replays its first answer; the same code in a new request is refused.
    assert await identity.customers.AuthenticateCustomer(first, metadata=bank_app) == answer
    assert await failure(identity.customers.AuthenticateCustomer(request(code), metadata=bank_app)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SCA_FAILED",
    )
    assert (await identity.customers.AuthenticateCustomer(request(customer.code()), metadata=bank_app)).customer
    assert await failure(identity.customers.AuthenticateCustomer(request(""), metadata=bank_app)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )


async def test_five_failures_lock_the_customer_until_unlocked(identity: Identity) -> None:
    bank_app, admin = await identity.bank_app(), await identity.admin()
    customer = await identity.create_customer()
    wrong_code = totp.hotp(customer.seed, totp.time_step(time.time()) + 7)
    for attempt in range(5):
        password = PASSWORD if attempt % 2 else "not the password"
        assert await failure(
            identity.customers.AuthenticateCustomer(
                customer_pb2.AuthenticateCustomerRequest(
                    request_id=request_id(),
                    username=customer.username,
                    password=password,
                    one_time_code=wrong_code,
                ),
                metadata=bank_app,
            )
        ) == (grpc.StatusCode.PERMISSION_DENIED, "SCA_FAILED")
    good = customer_pb2.AuthenticateCustomerRequest(
        request_id=request_id(), username=customer.username, password=PASSWORD, one_time_code=customer.code()
    )
    assert await failure(identity.customers.AuthenticateCustomer(good, metadata=bank_app)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CUSTOMER_LOCKED",
    )
    got = await identity.customers.GetCustomer(customer_pb2.GetCustomerRequest(name=customer.name), metadata=admin)
    assert got.customer.status == customer_pb2.CUSTOMER_STATUS_LOCKED
    unlock = customer_pb2.UnlockCustomerRequest(request_id=request_id(), name=customer.name)
    await identity.customers.UnlockCustomer(unlock, metadata=admin)
    assert await failure(
        identity.customers.UnlockCustomer(
            customer_pb2.UnlockCustomerRequest(request_id=request_id(), name=customer.name), metadata=admin
        )
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE_TRANSITION")
    good.request_id = request_id()
    assert (await identity.customers.AuthenticateCustomer(good, metadata=bank_app)).customer == customer.name
