"""CancelPayment, and recovery: the passes over payments whose driver was lost, the loop that
runs them, and the operators' RecoverPayments."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from meshlib.auth.consent import ConsentLookup
from meshlib.errors import MeshError
from meshlib.periodic import Periodic
from meshlib.storage import Codec, IdempotencyKey, Transactions
from services.payment.domain.payments import Payment, PaymentState
from services.payment.metrics import record_saga_recovery
from services.payment.ports import Clock, PaymentJournal, PaymentRegister, utc_now
from services.payment.queries import require_usable_consent
from services.payment.saga import SagaRunner, current_trace_id, traced
from services.payment.unit_of_work import PaymentUnitOfWork

log = logging.getLogger("services.payment")

UnitOfWorkFactory = Callable[..., PaymentUnitOfWork]
RECOVER_METHOD = "RecoverPayments"
OPERATOR_SCOPE = "operators"
KEY_RETENTION = dt.timedelta(hours=48)


class CancelPayment:
    """A partner cancels a payment before its money is asked for."""

    def __init__(self, consents: ConsentLookup, register: PaymentRegister, clock: Clock = utc_now) -> None:
        self._consents = consents
        self._register = register
        self._clock = clock

    async def __call__(self, partner_id: str, consent_id: str, payment_id: str, key: IdempotencyKey) -> Payment:
        """CANCELLED, or PAYMENT_NOT_CANCELLABLE; a replay of the request id answers the same payment."""
        await require_usable_consent(self._consents, partner_id, consent_id, self._clock())
        return await self._register.cancel(payment_id, partner_id, consent_id, key, current_trace_id())


@dataclass
class RecoveryResult:
    """What one recovery pass did."""

    examined: int = 0
    completed: int = 0
    compensated: int = 0
    pending: int = 0


class Recovery:
    """Finishes or undoes payments whose driver was lost: the same saga runner, resumed."""

    def __init__(self, journal: PaymentJournal, saga: SagaRunner) -> None:
        self._journal = journal
        self._saga = saga

    async def recover_one(self, payment_id: str) -> Payment | None:
        """Resume one payment if no live driver owns it; None when skipped."""
        if not await self._journal.claim(payment_id):
            return None
        payment, history = await self._journal.load(payment_id)
        try:
            with traced("payment.recover", payment_id):
                return await self._saga.drive(payment, history, resumed=True)
        except MeshError as error:
            log.warning("recovery step failed", extra={"payment": payment_id, "reason": error.reason})
            return (await self._journal.load(payment_id))[0]

    async def run_pass(self, *, older_than: dt.timedelta | None = None, batch: int = 200) -> RecoveryResult:
        """One pass over payments whose driver's lease expired (optionally idle ``older_than``)."""
        result = RecoveryResult()
        for payment_id in await self._journal.due_for_recovery(older_than, batch):
            result.examined += 1
            payment = await self.recover_one(payment_id)
            if payment is None or not payment.state.final:
                result.pending += 1
                record_saga_recovery("pending")
            elif payment.state is PaymentState.SETTLED:
                result.completed += 1
                record_saga_recovery("completed")
            else:
                result.compensated += 1
                record_saga_recovery("compensated")
        return result


RESULT_CODEC: Codec[RecoveryResult] = Codec.json(dataclasses.asdict, lambda data: RecoveryResult(**data))


class RecoverPayments:
    """RecoverPayments (operators): one pass now; a replay of the request id answers the first pass's counts."""

    def __init__(self, uow: UnitOfWorkFactory, recovery: Recovery, clock: Clock = utc_now) -> None:
        self._transactions = Transactions(uow, clock=clock)
        self._recovery = recovery

    async def __call__(self, request_id: str, fingerprint: str, older_than: dt.timedelta) -> RecoveryResult:
        """Run a pass over payments idle longer than ``older_than``.

        The pass is many transactions of its own, so it runs before its answer is saved; a
        concurrent replay may run a second pass, which finds nothing left to do.
        """
        key = IdempotencyKey(OPERATOR_SCOPE, RECOVER_METHOD, request_id, fingerprint)

        async def saved(uow: PaymentUnitOfWork) -> bytes | None:
            return await uow.idempotency.lookup(key.scope, key.method, key.request_id, key.fingerprint)

        answer = await self._transactions.read(saved)
        if answer is not None:
            return RESULT_CODEC.decode(answer)
        result = await self._recovery.run_pass(older_than=older_than)

        async def remember(uow: PaymentUnitOfWork) -> RecoveryResult:
            return result

        return await self._transactions.run(remember, key=key, codec=RESULT_CODEC)


async def purge_idempotency_keys(uow: UnitOfWorkFactory, now: dt.datetime, retention: dt.timedelta) -> int:
    """Forget idempotency keys past their retention (kept at least 24 h; 48 h here)."""
    async with uow() as work:
        purged = await work.idempotency.purge(now - retention)
        await work.commit()
    return purged


class RecoveryLoop:
    """Runs recovery at start-up and then every ``interval`` seconds; ``hourly`` once an hour."""

    def __init__(
        self, recovery: Recovery, interval_seconds: float, hourly: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        self._recovery = recovery
        self._interval = interval_seconds
        self._hourly = hourly
        self._passes = 0
        self._periodic = Periodic("payment-recovery", interval_seconds, self._pass)

    async def start(self) -> None:
        """Start the loop (no-op when the interval is 0)."""
        await self._periodic.start()

    async def stop(self) -> None:
        """Stop the loop; an interrupted step is replayed by the next pass (steps are idempotent)."""
        await self._periodic.stop()

    async def _pass(self) -> None:
        passes, self._passes = self._passes, self._passes + 1
        result = await self._recovery.run_pass()
        if result.examined:
            log.info("recovery pass", extra=dataclasses.asdict(result))
        if self._hourly is not None and passes % max(1, int(3600 / self._interval)) == 0:
            await self._hourly()
