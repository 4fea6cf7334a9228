"""Settlement's business metrics: positions read from the store published as gauges, and the
names the alert rules use really exposed on the process's registry."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meshlib.metrics import process_registry
from services.settlement import metrics
from services.settlement.domain.obligations import Position
from services.settlement.domain.participants import NetDebitCap, Participant, ParticipantStatus, ParticipantType
from services.settlement.metrics import REGISTRY

NOW = dt.datetime(2026, 11, 18, 15, 30, tzinfo=dt.UTC)


def _value(name: str, participant: str, currency: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"participant": participant, "currency": currency})


def _uow(positions: list[Position], participants: dict[str, Participant]) -> Any:
    async def all_positions() -> list[Position]:
        return positions

    async def get_many(ids: set[str]) -> dict[str, Participant]:
        return {i: participants[i] for i in ids if i in participants}

    class _Work:
        def __init__(self, *, read_only: bool) -> None:
            assert read_only

        async def __aenter__(self) -> SimpleNamespace:
            return SimpleNamespace(
                positions=SimpleNamespace(all=all_positions), participants=SimpleNamespace(get_many=get_many)
            )

        async def __aexit__(self, *exc: object) -> None:
            return None

    return _Work


def test_a_position_is_published_with_its_exposure_and_cap() -> None:
    metrics.set_settlement_position("participants/p1", "EUR", net_minor=-1_500, reserved_minor=500, cap_minor=10_000)
    assert _value("openbank_settlement_position_minor", "participants/p1", "EUR") == -1_500
    assert _value("openbank_settlement_exposure_minor", "participants/p1", "EUR") == 2_000
    assert _value("openbank_settlement_position_cap_minor", "participants/p1", "EUR") == 10_000


async def test_every_stored_position_is_published_against_its_cap() -> None:
    wallet = Participant(
        id="w1",
        type=ParticipantType.WALLET,
        partner_id="partner-1",
        settlement_account="accounts/settle-w1",
        status=ParticipantStatus.ACTIVE,
        created_at=NOW,
        updated_at=NOW,
        caps={"GBP": NetDebitCap("GBP", 50_000, 80)},
    )
    positions = [Position("w1", "GBP", net_minor=-700, reserved_minor=300), Position("gone", "GBP", net_minor=5)]
    await metrics.publish_positions(_uow(positions, {"w1": wallet}))
    assert _value("openbank_settlement_position_minor", "participants/w1", "GBP") == -700
    assert _value("openbank_settlement_exposure_minor", "participants/w1", "GBP") == 1_000
    assert _value("openbank_settlement_position_cap_minor", "participants/w1", "GBP") == 50_000
    # A position without a known participant has no cap to show.
    assert _value("openbank_settlement_position_cap_minor", "participants/gone", "GBP") == 0


def test_the_names_alert_rules_use_are_exposed() -> None:
    metrics.set_settlement_position("participants/p2", "EUR", net_minor=1)
    exposed = {
        sample.name
        for family in text_string_to_metric_families(generate_latest(process_registry("settlement")).decode())
        for sample in family.samples
    }
    assert exposed >= metrics.METRIC_NAMES
