"""Service layer for participants: registration, net debit caps, activation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from meshlib.errors import AlreadyExists, FieldCollector, NotFound
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size
from meshlib.storage import IdempotencyKey
from services.settlement.audit_records import audit_participant
from services.settlement.domain.participants import (
    DEFAULT_ALARM_THRESHOLD_PERCENT,
    NetDebitCap,
    Participant,
    ParticipantStatus,
    ParticipantType,
)
from services.settlement.service_common import PARTICIPANT_CODEC, SettlementTransactions, new_id
from services.settlement.unit_of_work import SettlementUnitOfWork


def normalise_cap(cap: NetDebitCap, prefix: str, errors: FieldCollector) -> NetDebitCap:
    """Check a cap (positive, threshold 1..100, 0 meaning the default); ``prefix`` locates its fields."""
    errors.check(cap.cap_minor > 0, f"{prefix}cap.minor_units", "must be greater than zero")
    threshold = cap.alarm_threshold_percent or DEFAULT_ALARM_THRESHOLD_PERCENT
    errors.check(1 <= threshold <= 100, f"{prefix}alarm_threshold_percent", "must be between 1 and 100")
    return NetDebitCap(cap.currency, cap.cap_minor, threshold)


class ParticipantService:
    """The bank and the partner wallets taking part in settlement."""

    def __init__(self, transactions: SettlementTransactions, id_factory: Callable[[], str] = new_id) -> None:
        self._tx = transactions
        self._new_id = id_factory

    async def register(
        self,
        key: IdempotencyKey,
        participant_type: ParticipantType,
        partner_id: str | None,
        settlement_account: str,
        caps: Sequence[NetDebitCap],
    ) -> Participant:
        """Register the bank (one only) or a partner's wallet (one per partner), ACTIVE."""
        errors = FieldCollector()
        if participant_type is not ParticipantType.WALLET:
            errors.check(not partner_id, "partner", f"must be empty for the {participant_type.value.lower()}")
        else:
            errors.check(bool(partner_id), "partner", "is required for a wallet")
        checked: dict[str, NetDebitCap] = {}
        for index, cap in enumerate(caps):
            prefix = f"net_debit_caps[{index}]."
            if errors.check(cap.currency not in checked, f"{prefix}currency_code", "has a second cap"):
                checked[cap.currency] = normalise_cap(cap, prefix, errors)
        errors.raise_if_any()

        async def operation(uow: SettlementUnitOfWork) -> Participant:
            now = self._tx.clock()
            participant = Participant(
                id=self._new_id(),
                type=participant_type,
                partner_id=partner_id or None,
                settlement_account=settlement_account,
                status=ParticipantStatus.ACTIVE,
                created_at=now,
                updated_at=now,
                caps=checked,
            )
            if await uow.participants.by_registration_key(participant.registration_key) is not None:
                raise AlreadyExists(
                    "a participant is already registered for this partner"
                    if partner_id
                    else f"the {participant_type.value.lower()} is already registered",
                    reason="RESOURCE_ALREADY_EXISTS",
                )
            await uow.participants.add(participant)
            audit_participant(uow, "participant.register", participant)
            for currency in checked:
                await uow.positions.lock(currency, [participant.id])
            return participant

        return await self._tx.run(operation, key=key, codec=PARTICIPANT_CODEC)

    async def update_cap(self, key: IdempotencyKey, participant_id: str, cap: NetDebitCap) -> Participant:
        """Set (or add) the participant's cap in one currency; lowering below exposure is allowed."""
        errors = FieldCollector()
        cap = normalise_cap(cap, "", errors)
        errors.raise_if_any()

        async def operation(uow: SettlementUnitOfWork) -> Participant:
            now = self._tx.clock()
            participant = await self._existing(uow, participant_id)
            updated = participant.with_cap(cap, now)
            await uow.participants.save_cap(participant_id, cap)
            await uow.participants.update(updated)
            audit_participant(uow, "participant.cap", updated)
            await uow.positions.lock(cap.currency, [participant_id])
            return updated

        return await self._tx.run(operation, key=key, codec=PARTICIPANT_CODEC)

    async def deactivate(self, key: IdempotencyKey, participant_id: str) -> Participant:
        """INACTIVE: new reservations involving it fail PARTICIPANT_NOT_ACTIVE."""
        return await self._change_status(key, "DeactivateParticipant", participant_id, Participant.deactivate)

    async def activate(self, key: IdempotencyKey, participant_id: str) -> Participant:
        """ACTIVE again."""
        return await self._change_status(key, "ActivateParticipant", participant_id, Participant.activate)

    async def _change_status(
        self,
        key: IdempotencyKey,
        method: str,
        participant_id: str,
        transition: Callable[[Participant, dt.datetime], Participant],
    ) -> Participant:
        async def operation(uow: SettlementUnitOfWork) -> Participant:
            now = self._tx.clock()
            updated = transition(await self._existing(uow, participant_id), now)
            await uow.participants.update(updated)
            audit_participant(uow, f"participant.{method.removesuffix('Participant').lower()}", updated)
            return updated

        return await self._tx.run(operation, key=key, codec=PARTICIPANT_CODEC)

    async def get(self, participant_id: str) -> Participant:
        """One participant."""

        async def operation(uow: SettlementUnitOfWork) -> Participant:
            return await self._existing(uow, participant_id)

        return await self._tx.read(operation)

    async def list(self, requested_page_size: int, page_token: str) -> tuple[list[Participant], str]:
        """Participants oldest first, and the next page token."""
        limit = page_size(requested_page_size)
        filters = filter_fingerprint()
        cursor = decode_page_token(page_token, filters)
        after = cursor.get("seq") if cursor else None

        async def operation(uow: SettlementUnitOfWork) -> list[tuple[int, Participant]]:
            return await uow.participants.page(after if isinstance(after, int) else None, limit + 1)

        rows = await self._tx.read(operation)
        next_token = encode_page_token({"seq": rows[limit - 1][0]}, filters) if len(rows) > limit else ""
        return [participant for _, participant in rows[:limit]], next_token

    @staticmethod
    async def _existing(uow: SettlementUnitOfWork, participant_id: str) -> Participant:
        participant = await uow.participants.get(participant_id)
        if participant is None:
            raise NotFound("participant not found")
        return participant
