"""The conformance checks of payments: create, replay, read, cancel, watch, refund.

A mixin of :class:`meshcli.conformance_checks.ConformanceRun`: it uses the run's client,
consent session, partner and the payment an earlier check created.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from typing import TYPE_CHECKING

import grpc
from openbank_sdk import interbank, risk

from meshcli.conformance_support import CheckFailed, _expect, expect_error, ob
from openbank.payment.v1 import payment_pb2

if TYPE_CHECKING:
    from meshcli.conformance_checks import ConformanceConfig

# Creditors at another bank by the sandbox's scheme simulator rules (schemesim/rules.yaml):
# any account settles, account number 0000000404 is closed (AC04).
SETTLING_IBAN = "DE89370400440532013000"
CLOSED_IBAN = "DE24370400440000000404"


class PaymentChecks:
    """Checks of PaymentService (the run provides the attributes below)."""

    config: ConformanceConfig
    client: ob.OpenBankClient
    partner: str
    payment: payment_pb2.Payment | None

    def _consent_session(self) -> ob.ConsentSession:
        raise NotImplementedError

    async def payment_create(self) -> str:
        session = self._consent_session()
        _expect(bool(self.partner), "the partner is unknown (CreateConsent failed)")
        self.payment = await session.create_payment(
            self.config.customer_account, ob.money(100, "EUR"), creditor_wallet=self.partner
        )
        _expect(self.payment.name.startswith("payments/"), f"name {self.payment.name!r}")
        _expect(self.payment.state != payment_pb2.PAYMENT_STATE_UNSPECIFIED, "no state")
        iso_codes = {"RCVD", "ACTC", "ACSP", "ACSC", "RJCT", "CANC", "PATC", "RVWP"}
        _expect(self.payment.iso20022_status in iso_codes, "ISO 20022 code")
        return f"{self.payment.name} {payment_pb2.PaymentState.Name(self.payment.state)}"

    async def payment_idempotency(self) -> str:
        session = self._consent_session()
        key = f"conf-{uuid.uuid4().hex}"
        account, wallet = self.config.customer_account, self.partner
        first = await session.create_payment(account, ob.money(101, "EUR"), creditor_wallet=wallet, request_id=key)
        again = await session.create_payment(account, ob.money(101, "EUR"), creditor_wallet=wallet, request_id=key)
        _expect(first.name == again.name, f"{first.name} then {again.name}")
        return await expect_error(
            session.create_payment(account, ob.money(102, "EUR"), creditor_wallet=wallet, request_id=key),
            grpc.StatusCode.ALREADY_EXISTS,
            "REQUEST_ID_REUSED",
        )

    async def payment_customer_present(self) -> str:
        """The PSU context (the customer's IP address and device) is taken, and checked."""
        session = self._consent_session()
        account, wallet = self.config.customer_account, self.partner
        present = risk.psu_context("203.0.113.7", "conformance-device", "openbank-mesh conformance")
        made = await session.create_payment(account, ob.money(103, "EUR"), creditor_wallet=wallet, psu_context=present)
        state = payment_pb2.PaymentState.Name(made.state)
        if risk.waiting(made):  # the bank's risk rules want the customer or a review: cancel it
            state += (
                " (cancelled: " + payment_pb2.PaymentState.Name((await session.cancel_payment(made.name)).state) + ")"
            )
        too_long = payment_pb2.PsuContext(ip_address="1" * 46, device_id="d")
        refused = await expect_error(
            session.create_payment(account, ob.money(103, "EUR"), creditor_wallet=wallet, psu_context=too_long),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
        )
        return f"{state}; a 46-character IP address: {refused}"

    async def payment_get_list_cancel(self) -> str:
        session = self._consent_session()
        _expect(self.payment is not None, "no payment was created")
        assert self.payment is not None
        fetched = await session.get_payment(self.payment.name)
        _expect(fetched.name == self.payment.name, "GetPayment returned another payment")
        listed = [p.name async for p in session.list_payments()]
        _expect(self.payment.name in listed, "ListPayments misses the payment")
        final = {payment_pb2.PAYMENT_STATE_SETTLED, payment_pb2.PAYMENT_STATE_REJECTED}
        if fetched.state in final:
            outcome = await expect_error(
                session.cancel_payment(fetched.name), grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_NOT_CANCELLABLE"
            )
        else:
            outcome = payment_pb2.PaymentState.Name((await session.cancel_payment(fetched.name)).state)
        return f"{len(listed)} listed; cancel: {outcome}"

    async def payment_watch(self) -> str:
        session = self._consent_session()
        seen: list[payment_pb2.PaymentEvent] = []
        method = "/openbank.payment.v1.PaymentService/WatchPayments"

        async def watch() -> None:
            async for event in self.client.watch_payments(max_reconnects=1):
                seen.append(event)

        watcher = asyncio.create_task(watch())
        try:
            # An empty cursor streams from now and nothing says when the stream is subscribed:
            # pay (a few times at most) until a new payment's event arrives.
            for _ in range(3):
                payment = await session.create_payment(
                    self.config.customer_account, ob.money(103, "EUR"), creditor_wallet=self.partner
                )
                for _ in range(60):
                    if watcher.done():
                        watcher.result()  # raises the stream's error
                        raise CheckFailed("the stream ended")
                    event = next((e for e in seen if e.payment == payment.name), None)
                    if event is not None:
                        self.recorder.record(method, grpc.StatusCode.OK)
                        _expect(bool(event.cursor), "an event without a cursor")
                        return f"event {payment_pb2.PaymentState.Name(event.state)} with a cursor"
                    await asyncio.sleep(0.05)
            raise CheckFailed("no event for three new payments")
        except ob.OpenBankError as error:
            self.recorder.record(method, error.code)
            raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, ob.OpenBankError):
                await watcher

    async def payment_refund(self) -> str:
        _expect(self.payment is not None, "no payment was created")
        assert self.payment is not None
        if self.payment.state != payment_pb2.PAYMENT_STATE_SETTLED:
            return await expect_error(
                self.client.refund_payment(self.payment.name, reason="CUST"),
                grpc.StatusCode.FAILED_PRECONDITION,
                "PAYMENT_NOT_REFUNDABLE",
            )
        part = await self.client.refund_payment(
            self.payment.name, amount=ob.money(1, self.payment.amount.currency_code), reason="CUST"
        )
        _expect(part.type == payment_pb2.PAYMENT_TYPE_REFUND, "the refund is not of type REFUND")
        _expect(part.refund_of == self.payment.name, f"refund_of {part.refund_of!r}")
        _expect(part.return_reason == "CUST", f"return_reason {part.return_reason!r}")
        shown = await self._consent_session().get_payment(self.payment.name)
        _expect(part.name in shown.refunds, "the original does not list its refund")
        too_much = ob.money(self.payment.amount.minor_units, self.payment.amount.currency_code)
        refused = await expect_error(
            self.client.refund_payment(self.payment.name, amount=too_much, reason="CUST"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "REFUND_AMOUNT_EXCEEDED",
        )
        return f"{part.name} {payment_pb2.PaymentState.Name(part.state)}; over the rest: {refused}"

    async def payment_external(self) -> str:
        """A payment to another bank through the scheme: settled, or rejected by the other bank
        (the sandbox's scheme simulator closes account number 0000000404), a bad IBAN refused."""
        session = self._consent_session()
        account = self.config.customer_account

        def to(iban: str) -> payment_pb2.ExternalCreditor:
            return interbank.creditor(name="Conformance Creditor", agent_bic="COBADEFFXXX", iban=iban)

        refused = await expect_error(
            session.create_payment(account, ob.money(100, "EUR"), creditor_external=to("DE00370400440532013000")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
        )
        sent = await session.create_payment(account, ob.money(100, "EUR"), creditor_external=to(SETTLING_IBAN))
        _expect(sent.type == payment_pb2.PAYMENT_TYPE_EXTERNAL_TRANSFER, f"type {sent.type}")
        _expect(sent.creditor_external.iban == SETTLING_IBAN, "the creditor is not shown back")
        settled = await interbank.wait_until_final(session, sent.name, poll_seconds=0.5, timeout_seconds=60)
        _expect(settled.state == payment_pb2.PAYMENT_STATE_SETTLED, f"ended {settled.state} {settled.status_reason}")
        closed = await session.create_payment(account, ob.money(100, "EUR"), creditor_external=to(CLOSED_IBAN))
        rejected = await interbank.wait_until_final(session, closed.name, poll_seconds=0.5, timeout_seconds=60)
        _expect(
            (rejected.state, rejected.status_reason) == (payment_pb2.PAYMENT_STATE_REJECTED, "CREDITOR_ACCOUNT_CLOSED"),
            f"the closed account's payment ended {rejected.state} {rejected.status_reason}",
        )
        _expect(rejected.status_reason_message.startswith("AC04"), "no ISO 20022 code in status_reason_message")
        return f"{settled.name} SETTLED; {rejected.name} REJECTED CREDITOR_ACCOUNT_CLOSED; bad IBAN: {refused}"

    async def payment_schedules(self) -> str:
        session = self._consent_session()
        account, wallet = self.config.customer_account, self.partner
        tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        order = await session.create_standing_order(
            account,
            ob.money(100, "EUR"),
            creditor_wallet=wallet,
            frequency=ob.MONTHLY,
            first_execution_time=tomorrow,
            execution_count=2,
        )
        _expect(order.state == payment_pb2.STANDING_ORDER_STATE_ACTIVE, f"state {order.state}")
        _expect(
            order.next_execution_time.ToSeconds() == int(tomorrow.timestamp()), "next_execution_time is not the first"
        )
        fetched = await session.get_standing_order(order.name)
        _expect(fetched.name == order.name, "GetStandingOrder returned another order")
        listed = [o.name async for o in session.list_standing_orders()]
        _expect(order.name in listed, "ListStandingOrders misses the order")
        cancelled = await session.cancel_standing_order(order.name)
        _expect(cancelled.state == payment_pb2.STANDING_ORDER_STATE_CANCELLED, f"state {cancelled.state}")
        later = await session.create_payment(
            account, ob.money(100, "EUR"), creditor_wallet=wallet, requested_execution_time=tomorrow
        )
        _expect(later.state == payment_pb2.PAYMENT_STATE_SCHEDULED and later.iso20022_status == "PDNG", "not SCHEDULED")
        dropped = await session.cancel_payment(later.name)
        _expect(dropped.state == payment_pb2.PAYMENT_STATE_CANCELLED, f"cancel: {dropped.state}")
        return f"{order.name} ACTIVE -> CANCELLED; {later.name} SCHEDULED -> CANCELLED"
