"""The Python grpc.aio load generator, run as its own process by the harness.

``python -m bench.driver <spec.json>`` keeps ``concurrency`` calls in flight on one channel
for ``warmup + duration`` seconds and prints one JSON line: OK calls, every status by
name, and the latency summary of the OK calls in the measured window. Two modes:

- ``raw``: the same serialized request every time (reads), the answer is not decoded;
- ``pay``: a new CreatePayment (fresh request_id) per call; a call counts OK only when its
  payment is SETTLED, polling GetPayment when CreatePayment answered before the saga ended;
- ``mix``: as ``pay`` (2 minor units each), every ``refund_every``-th call a RefundPayment
  of 1 minor unit of a top-up that settled (OK when the refund is SETTLED), and every
  ``external_every``-th call (half a period later) a payment to another bank through the
  scheme simulator (OK once the scheme settled it and the payment is SETTLED).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import json
import sys
import time
import uuid
from dataclasses import asdict
from typing import Any

import grpc

from bench.stats import OK, LatencySummary, count_statuses

CREATE_PAYMENT = "/openbank.payment.v1.PaymentService/CreatePayment"
GET_PAYMENT = "/openbank.payment.v1.PaymentService/GetPayment"
FINAL_STATES = ("SETTLED", "REJECTED", "CANCELLED")
SETTLE_POLL_SECONDS = 0.005
SETTLE_TIMEOUT_SECONDS = 30.0


class RawCaller:
    """Sends one fixed request; the bytes are never decoded."""

    def __init__(self, channel: grpc.aio.Channel, spec: dict[str, Any]) -> None:
        self._call = channel.unary_unary(spec["method"])  # no serializers: bytes in, bytes out
        self._request = base64.b64decode(spec["request_b64"])
        self._metadata = itertools.cycle([tuple(map(tuple, m)) for m in spec["metadata"]])
        self._timeout = spec.get("timeout", 10.0)

    async def __call__(self) -> str:
        await self._call(self._request, metadata=next(self._metadata), timeout=self._timeout)
        return OK


class PaymentCaller:
    """One wallet top-up per call, OK once SETTLED."""

    def __init__(self, channel: grpc.aio.Channel, spec: dict[str, Any]) -> None:
        from openbank.common.v1 import money_pb2
        from openbank.payment.v1 import payment_pb2, payment_pb2_grpc

        self._pb2 = payment_pb2
        self._money = money_pb2.Money
        self._stub = payment_pb2_grpc.PaymentServiceStub(channel)
        # One (metadata, debtor account) per consent; calls take turns.
        self._payers = itertools.cycle(
            [(tuple(map(tuple, payer["metadata"])), payer["account"]) for payer in spec["payers"]]
        )
        self._creditor_wallet = spec["creditor_wallet"]
        self._minor_units = spec.get("minor_units", 1)
        self._currency = spec.get("currency", "EUR")
        self._timeout = spec.get("timeout", 10.0)
        self.states: dict[str, int] = {}
        self.settled: collections.deque[tuple[tuple[tuple[str, str], ...], str]] = collections.deque(maxlen=10_000)

    async def __call__(self) -> str:
        return await self._pay(self._top_up)

    def _top_up(self, account: str) -> Any:
        return self._pb2.CreatePaymentRequest(
            request_id=uuid.uuid4().hex,
            debtor_account=account,
            creditor_wallet=self._creditor_wallet,
            amount=self._money(currency_code=self._currency, minor_units=self._minor_units),
            type=self._pb2.PAYMENT_TYPE_WALLET_TOP_UP,
            remittance_information="bench",
        )

    async def _pay(self, request_of: Any, *, refundable: bool = True) -> str:
        """CreatePayment, then GetPayment until final; OK once SETTLED (a refundable one, a
        top-up, is kept for the refunds of ``mix``)."""
        metadata, account = next(self._payers)
        pb2 = self._pb2
        answer = await self._stub.CreatePayment(request_of(account), metadata=metadata, timeout=self._timeout)
        payment = answer.payment
        state = pb2.PaymentState.Name(payment.state).removeprefix("PAYMENT_STATE_")
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        while state not in FINAL_STATES and time.monotonic() < deadline:
            await asyncio.sleep(SETTLE_POLL_SECONDS)
            polled = await self._stub.GetPayment(
                pb2.GetPaymentRequest(name=payment.name), metadata=metadata, timeout=self._timeout
            )
            state = pb2.PaymentState.Name(polled.payment.state).removeprefix("PAYMENT_STATE_")
        self.states[state] = self.states.get(state, 0) + 1
        if state == "SETTLED" and refundable:
            self.settled.append((metadata, payment.name))
        return OK if state == "SETTLED" else f"PAYMENT_{state}"


class MixedCaller(PaymentCaller):
    """Top-ups, and every ``refund_every``-th call a refund of part of one that settled: the
    refund runs the same saga backwards (out of the wallet's settlement account)."""

    def __init__(self, channel: grpc.aio.Channel, spec: dict[str, Any]) -> None:
        super().__init__(channel, spec)
        self._refund_every = int(spec.get("refund_every", 4))
        self._external_every = int(spec.get("external_every", 0))
        self._external_iban = spec.get("external_iban", "DE89370400440532013000")
        self._calls = itertools.count(1)
        self.refund_states: dict[str, int] = {}
        self.external_states: dict[str, int] = {}

    def _external(self, account: str) -> Any:
        pb2 = self._pb2
        return pb2.CreatePaymentRequest(
            request_id=uuid.uuid4().hex,
            debtor_account=account,
            creditor_external=pb2.ExternalCreditor(
                iban=self._external_iban, name="Bench Creditor", agent_bic="COBADEFFXXX"
            ),
            amount=self._money(currency_code=self._currency, minor_units=self._minor_units),
            type=pb2.PAYMENT_TYPE_EXTERNAL_TRANSFER,
            remittance_information="bench",
        )

    async def __call__(self) -> str:
        call = next(self._calls)
        if self._external_every and call % self._external_every == self._external_every // 2:
            status = await self._pay(self._external, refundable=False)
            self.external_states[status] = self.external_states.get(status, 0) + 1
            return status
        if call % self._refund_every or not self.settled:
            return await super().__call__()
        metadata, original = self.settled.popleft()
        pb2 = self._pb2
        answer = await self._stub.RefundPayment(
            pb2.RefundPaymentRequest(
                request_id=uuid.uuid4().hex,
                name=original,
                amount=self._money(currency_code=self._currency, minor_units=1),
                reason="CUST",
            ),
            metadata=metadata,
            timeout=self._timeout,
        )
        state = pb2.PaymentState.Name(answer.refund.state).removeprefix("PAYMENT_STATE_")
        self.refund_states[state] = self.refund_states.get(state, 0) + 1
        return OK if state == "SETTLED" else f"REFUND_{state}"


async def drive(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load described by ``spec`` and summarise it."""
    concurrency, warmup, duration = int(spec["concurrency"]), float(spec["warmup"]), float(spec["duration"])
    options = [("grpc.max_concurrent_streams", 1024)]
    async with grpc.aio.insecure_channel(spec["target"], options=options) as channel:
        callers = {"pay": PaymentCaller, "mix": MixedCaller}
        caller: Any = callers.get(spec["mode"], RawCaller)(channel, spec)
        latencies: list[float] = []
        statuses: list[str] = []
        total_ok = 0
        started = time.perf_counter()
        measure_from = started + warmup
        stop_at = measure_from + duration

        async def worker() -> None:
            nonlocal total_ok
            while True:
                begin = time.perf_counter()
                if begin >= stop_at:
                    return
                try:
                    status = await caller()
                except grpc.aio.AioRpcError as error:
                    status = error.code().name
                end = time.perf_counter()
                total_ok += status == OK
                # Throughput and latency: OK calls completed inside the window, whenever they
                # began. Errors count wherever they end after the warm-up (a late failure too).
                if measure_from <= end <= stop_at:
                    statuses.append(status)
                    if status == OK:
                        latencies.append(end - begin)
                elif end > stop_at and status != OK:
                    statuses.append(status)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        measured = stop_at - measure_from
    counted = count_statuses(statuses)
    result = {
        "ok_calls": counted.get(OK, 0),
        "total_ok_calls": total_ok,  # warm-up included: the CPU sample spans the whole run
        "duration_s": measured,
        "statuses": counted,
        "latency": asdict(LatencySummary.from_seconds(latencies)),
    }
    if isinstance(caller, PaymentCaller):
        result["payment_states"] = caller.states
    if isinstance(caller, MixedCaller):
        result["refund_states"] = caller.refund_states
        result["external_states"] = caller.external_states
    return result


def main() -> None:
    """Read the spec file named on the command line, print the result as one JSON line."""
    import uvloop

    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    # uvloop, as the mesh runs: the load generator shares the machine's two cores with the
    # mesh, and the less it spends per call the less it takes from what is measured.
    print(json.dumps(uvloop.run(drive(spec))), flush=True)


if __name__ == "__main__":
    main()
