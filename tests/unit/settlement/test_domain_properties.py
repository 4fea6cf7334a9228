"""Hypothesis on the pure rules: random reserve/commit/release/close/settle sequences keep
positions under caps, every committed obligation in exactly one window, nets summing to zero,
and settled windows leaving positions exactly once."""

from __future__ import annotations

from hypothesis import given, settings

from tests.unit.settlement.scenarios import (
    CAPS,
    OK,
    Operation,
    PureBook,
    Reserve,
    check_invariants,
    operations,
    pure_window_totals,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_random_operations_keep_the_settlement_invariants(ops: list[Operation]) -> None:
    book = PureBook()
    caps = {str(i): cap for i, cap in enumerate(CAPS)}
    for op in ops:
        result = book.apply(op)
        if isinstance(op, Reserve) and result == OK:
            assert book.positions[op.payer].exposure_minor <= CAPS[op.payer]
        check_invariants(
            {str(i): p for i, p in book.positions.items()},
            caps,
            list(book.obligations.values()),
            pure_window_totals(book),
            book.settled_any,
        )
