"""The kill switch's rule: a capability off for a partner refuses that partner's payments of that
type only; off for all refuses everyone's."""

from __future__ import annotations

import pytest

from meshlib.errors import FailedPrecondition
from services.payment.capabilities import ALL_PARTNERS, check_capability


def _scope(off: frozenset[tuple[str, str]], partner: str, capability: str) -> str | None:
    try:
        check_capability(off, partner, capability)
    except FailedPrecondition as refused:
        assert (refused.reason, refused.metadata["capability"]) == ("CAPABILITY_SWITCHED_OFF", capability)
        return refused.metadata["scope"]
    return None


@pytest.mark.parametrize(
    ("off", "expected"),
    [
        (frozenset(), {"p1": None, "p2": None}),
        (frozenset({("WALLET_TOP_UP", "p1")}), {"p1": "partner", "p2": None}),
        (frozenset({("WALLET_TOP_UP", ALL_PARTNERS)}), {"p1": "all", "p2": "all"}),
        (frozenset({("TRANSFER", ALL_PARTNERS), ("WALLET_TOP_UP", "p2")}), {"p1": None, "p2": "partner"}),
    ],
)
def test_a_capability_off_for_a_partner_or_all(
    off: frozenset[tuple[str, str]], expected: dict[str, str | None]
) -> None:
    assert {partner: _scope(off, partner, "WALLET_TOP_UP") for partner in expected} == expected
