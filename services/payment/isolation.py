"""Dynamic isolation, the use cases: a customer's capabilities as they stand, the customer's
restore (audited in its transaction, told to the partners), and the sweep that pauses or
lowers what is unused, and releases what a loosened policy no longer isolates.

The sweep runs on one replica at a time: the holder of the ``isolation`` lease row in
``outbox_relays`` (meshlib.outbox's lease, as the event relays; taken over when it lapses). Each
tick it relays new changes to identity's partner event log (each once by its source key) and,
every ``sweep_every``, goes through the customers in batches: each batch's changes, their
audit records and their outbox rows in one transaction. The rules are domain/isolation.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from meshlib.audit import Actor
from meshlib.errors import FailedPrecondition, InvalidArgument
from meshlib.outbox import advance_lease, claim_lease
from meshlib.periodic import Periodic
from meshlib.storage import Transactions
from services.payment.domain.isolation import CAPABILITIES, CapabilityState, IsolationPolicy, Status, restored
from services.payment.isolation_repository import IsolationEvent
from services.payment.ports import Clock, utc_now
from services.payment.tables import outbox_relays
from services.payment.unit_of_work import PaymentUnitOfWork

log = logging.getLogger("payment.isolation")

LEASE_NAME = "isolation"
BATCH = 200
EVENT_BATCH = 200


class IsolationEventSink(Protocol):
    """Where the changes go: each partner the customer paid through, on its consent."""

    async def append(self, events: list[tuple[IsolationEvent, str, str]]) -> None:
        """Append each (event, partner, consent) once (sent again: ignored)."""


def _audit(uow: PaymentUnitOfWork, state: CapabilityState, actor: Actor | None, now: dt.datetime) -> None:
    uow.audit.record(
        "payment.isolation",
        f"customers/{state.customer_id}/capabilities/{state.capability}",
        outcome=state.status.value,
        details={
            "reason": state.reason,
            "policy_version": state.policy_version,
            "limit_minor": state.limit_minor,
            "currency": state.currency,
        },
        actor=actor or Actor("system", "system:payment-isolation"),
        customer_id=state.customer_id,
        at=now,
    )


class CustomerIsolation:
    """What the bank app, the bank's pages and operators do with a customer's capabilities."""

    def __init__(self, transactions: Transactions[PaymentUnitOfWork], clock: Clock = utc_now) -> None:
        self._transactions = transactions
        self._clock = clock

    async def capabilities(self, customer_id: str) -> list[CapabilityState]:
        """The customer's capabilities in the contract's order (none: the bank never saw them pay)."""

        async def read(uow: PaymentUnitOfWork) -> list[CapabilityState]:
            states = (await uow.isolation.load([customer_id])).get(customer_id, {})
            return [states[c] for c in CAPABILITIES if c in states]

        return await self._transactions.read(read)

    async def restore(self, customer_id: str, capability: str, actor: Actor) -> CapabilityState:
        """ACTIVE again (the caller authenticated the customer strongly); audited and told to the
        partners in the same transaction. Restoring what is active changes nothing."""
        if capability not in CAPABILITIES:
            raise InvalidArgument.field("capability", f"must be one of {', '.join(CAPABILITIES)}")

        async def change(uow: PaymentUnitOfWork) -> CapabilityState:
            now = self._clock()
            state = (await uow.isolation.load([customer_id])).get(customer_id, {}).get(capability)
            if state is None:
                raise FailedPrecondition(
                    "the customer has no such capability paused or lowered",
                    reason="CAPABILITY_NOT_ISOLATED",
                    metadata={"capability": capability},
                )
            if state.status is Status.ACTIVE:
                return state
            after = restored(state, now, f"{actor.kind}:{actor.subject}")
            await uow.isolation.save(after)
            await uow.isolation.add_event(after, now)
            _audit(uow, after, actor, now)
            return after

        return await self._transactions.run(change)


class IsolationSweep:
    """The leased background job: relay the changes, and pause or lower what is unused."""

    def __init__(
        self,
        transactions: Transactions[PaymentUnitOfWork],
        policy: Callable[[], IsolationPolicy],
        sink: IsolationEventSink | None,
        *,
        interval_seconds: float,
        sweep_every_seconds: float,
        lease: dt.timedelta = dt.timedelta(seconds=30),
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transactions = transactions
        self._policy = policy
        self._sink = sink
        self._sweep_every = sweep_every_seconds
        self._lease = lease
        self._clock = clock
        self._monotonic = monotonic
        self._owner = uuid.uuid4().hex
        self._next_sweep = 0.0
        self._periodic = Periodic("isolation-sweep", interval_seconds, self.tick)

    async def start(self) -> None:
        """Run in the background."""
        await self._periodic.start()

    async def stop(self) -> None:
        """Stop running."""
        await self._periodic.stop()

    async def tick(self) -> int:
        """One turn while holding the lease: relay, and sweep when due; how many changed."""
        position = await self._transactions.run(
            lambda uow: claim_lease(uow.connection, outbox_relays, LEASE_NAME, self._owner, self._clock(), self._lease)
        )
        if position is None:
            return 0  # another replica holds the lease
        changed = 0
        if self._monotonic() >= self._next_sweep:
            self._next_sweep = self._monotonic() + self._sweep_every
            changed = await self.sweep()
        await self.relay(position)
        return changed

    async def sweep(self) -> int:
        """Every customer the bank knows capabilities of, a batch at a time: read without the
        writers' lock, then only the customers with a change evaluated again and written in a
        transaction of their own (payments recorded meanwhile are seen: a fresh use wins)."""
        after, changed = "", 0
        while True:
            customers, due = await self._transactions.read(lambda uow, start=after: self._due(uow, start))
            if due:
                changed += await self._transactions.run(lambda uow, these=due: self._isolate(uow, these))
            if len(customers) < BATCH:
                return changed
            after = customers[-1]

    async def _evaluate(self, uow: PaymentUnitOfWork, customers: list[str]) -> dict[str, list[CapabilityState]]:
        policy, now = self._policy(), self._clock()
        states = await uow.isolation.load(customers)
        peaks: dict[str, int] = {}
        if policy.daily_limit is not None:
            since = policy.lookback_start(now).astimezone(dt.UTC).date()
            peaks = await uow.isolation.peak_days(customers, policy.daily_limit.currency, since)
        changes = {c: policy.evaluate(states.get(c, {}).values(), peaks.get(c, 0), now) for c in customers}
        return {c: found for c, found in changes.items() if found}

    async def _due(self, uow: PaymentUnitOfWork, after: str) -> tuple[list[str], list[str]]:
        """The next batch of customers, and those of them with something to pause or lower."""
        customers = await uow.isolation.customers_after(after, BATCH)
        return customers, sorted(await self._evaluate(uow, customers)) if customers else []

    async def _isolate(self, uow: PaymentUnitOfWork, customers: list[str]) -> int:
        now, changed = self._clock(), 0
        for changes in (await self._evaluate(uow, customers)).values():
            for change in changes:
                await uow.isolation.save(change)
                await uow.isolation.add_event(change, now)
                _audit(uow, change, None, now)
                changed += 1
        if changed:
            log.info(
                "capabilities isolated or released", extra={"count": changed, "policy_version": self._policy().version}
            )
        return changed

    async def relay(self, position: int) -> int:
        """Hand the changes after ``position`` to the partners' event logs; how many events."""
        if self._sink is None:
            return 0
        sent = 0
        while True:

            async def read(uow: PaymentUnitOfWork, start: int = position) -> list[tuple[IsolationEvent, str, str]]:
                rows = await uow.isolation.events_after(start, EVENT_BATCH)
                told = await uow.isolation.consents_of(row.customer_id for row in rows)
                out = []
                for row in rows:
                    consents = told[row.customer_id]
                    out += [(row, partner, consent) for partner, consent in consents]
                    if not consents:
                        out.append((row, "", ""))  # nobody to tell: passed over
                return out

            batch = await self._transactions.read(read)
            if not batch:
                return sent
            await self._sink.append([entry for entry in batch if entry[1]])
            sent += len(batch)
            position = max(event.seq for event, _, _ in batch)
            held = await self._transactions.run(
                lambda uow, at=position: advance_lease(uow.connection, outbox_relays, LEASE_NAME, self._owner, at)
            )
            if not held:
                return sent  # lost the lease: the new holder sends them again (appended once)
