"""A batch's fingerprint is built without dataclasses.asdict, and must not change because of it.

Saved answers are kept 48 hours: a fingerprint computed differently after an upgrade would
turn every replay of an older batch into REQUEST_ID_REUSED.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from meshlib.errors import InvalidArgument, MeshError
from meshlib.money import Amount
from services.account.answers import batch_create_fingerprint, batch_post_fingerprint, request_fingerprint
from services.account.batches import FinishRequest
from services.account.domain.ledger import TransferRequest, TransferType

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
    assert batch_create_fingerprint(ITEMS) == generic
    for item in ITEMS:
        single = request_fingerprint(requests=[str(item) if isinstance(item, MeshError) else item])
        assert batch_create_fingerprint([item]) == single


def test_the_batch_of_posts_fingerprint_keeps_its_form() -> None:
    refused = InvalidArgument.field("requests[1].name", "refused by the converter")
    expected = json.dumps({"requests": [["k-1", "t-1"], str(refused)]}, sort_keys=True)
    fingerprint = batch_post_fingerprint([FinishRequest("k-1", "t-1"), refused])
    assert fingerprint == hashlib.sha256(expected.encode()).hexdigest()
