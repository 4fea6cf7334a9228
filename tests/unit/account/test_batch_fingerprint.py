"""A batch's fingerprint is built without dataclasses.asdict, and must not change because of it.

Saved answers are kept 48 hours: a fingerprint computed differently after an upgrade would
turn every replay of an older batch into REQUEST_ID_REUSED.
"""

from __future__ import annotations

import datetime as dt

from meshlib.errors import InvalidArgument, MeshError
from meshlib.money import Amount
from services.account.domain.ledger import TransferRequest, TransferType
from services.account.ledger_service import _plain_item, request_fingerprint

ITEMS: list[TransferRequest | MeshError] = [
    TransferRequest("t-1", "acc-a", "acc-b", Amount("EUR", 1), TransferType.SINGLE_PHASE),
    TransferRequest(
        "t-2",
        "acc-a",
        "acc-b",
        Amount("GBP", 10**12),
        TransferType.PENDING,
        dt.timedelta(days=1, seconds=3, microseconds=7),
        reference='réf "quoted" ✓',
        description="line\nbreak",
    ),
    TransferRequest("", "", "", Amount("", -5), TransferType.PENDING, None),
    InvalidArgument.field("requests[3].amount", "refused by the converter"),
]


def test_the_batch_fingerprint_is_the_generic_one() -> None:
    generic = request_fingerprint(requests=[str(i) if isinstance(i, MeshError) else i for i in ITEMS])
    assert request_fingerprint(requests=[_plain_item(item) for item in ITEMS]) == generic
    for item in ITEMS:
        single = request_fingerprint(requests=[str(item) if isinstance(item, MeshError) else item])
        assert request_fingerprint(requests=[_plain_item(item)]) == single
