"""Settlement's business metrics, on the settlement process's own registry (:func:`meshlib.metrics.owned_registry`):
every participant's position against its cap, read from the database (so every replica
publishes the same, correct figures)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Gauge

from meshlib.metrics import owned_registry
from services.settlement.unit_of_work import SettlementUnitOfWork

# Only the settlement process records (and exposes) these.
REGISTRY = owned_registry("settlement")
SETTLEMENT_POSITION = Gauge(
    "openbank_settlement_position_minor",
    "A participant's committed net position, in minor units (negative: it owes).",
    ("participant", "currency"),
    registry=REGISTRY,
)
SETTLEMENT_EXPOSURE = Gauge(
    "openbank_settlement_exposure_minor",
    "What a participant owes or has reserved to pay (reserved - net), in minor units.",
    ("participant", "currency"),
    registry=REGISTRY,
)
SETTLEMENT_POSITION_CAP = Gauge(
    "openbank_settlement_position_cap_minor",
    "A participant's net debit cap in the open window, in minor units (for near-cap alerts).",
    ("participant", "currency"),
    registry=REGISTRY,
)

# The names alert rules and dashboards may use, as Prometheus exposes them.
METRIC_NAMES = frozenset(
    {
        "openbank_settlement_position_minor",
        "openbank_settlement_exposure_minor",
        "openbank_settlement_position_cap_minor",
    }
)


def set_settlement_position(
    participant: str, currency: str, net_minor: int, reserved_minor: int = 0, cap_minor: int | None = None
) -> None:
    """Publish a participant's position in one currency, in integer minor units.

    ``net_minor`` is the committed net (negative when it owes), ``reserved_minor`` the
    outflows reserved but not yet committed; exposure = reserved - net is what the net
    debit cap bounds, so alerts compare exposure with the cap.
    """
    SETTLEMENT_POSITION.labels(participant, currency).set(net_minor)
    SETTLEMENT_EXPOSURE.labels(participant, currency).set(reserved_minor - net_minor)
    if cap_minor is not None:
        SETTLEMENT_POSITION_CAP.labels(participant, currency).set(cap_minor)


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
