"""Settlement's business metrics: every participant's position against its cap, read from
the database (so every replica publishes the same, correct figures)."""

from __future__ import annotations

from collections.abc import Callable

from meshlib.metrics import set_settlement_position
from services.settlement.unit_of_work import SettlementUnitOfWork


async def publish_positions(uow: Callable[..., SettlementUnitOfWork]) -> None:
    """Set the position, exposure and cap gauges of every participant and currency."""
    async with uow(read_only=True) as work:
        positions = await work.positions.all()
        participants = await work.participants.get_many({p.participant_id for p in positions})
    for position in positions:
        participant = participants.get(position.participant_id)
        cap = participant.caps.get(position.currency) if participant else None
        set_settlement_position(
            f"participants/{position.participant_id}",
            position.currency,
            net_minor=position.net_minor,
            reserved_minor=position.reserved_minor,
            cap_minor=cap.cap_minor if cap else 0,
        )
