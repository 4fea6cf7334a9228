"""``python -m schemesim`` as its own process: settings from OBM_*, a return that is due later
survives a SIGKILL, a bad rules file stops start-up, SIGTERM exits cleanly."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys

import pytest

from services.payment.adapters.clearing import ClearingStatus
from tests.integration.scheme import samples
from tests.integration.scheme.samples import outbound
from tests.support.scheme import REPO, SchemeProcess

pytestmark = pytest.mark.integration

RULES = {
    "rules": [
        {
            "name": "returned-soon",
            "match": {"creditor_account": samples.RETURNED_AC04},
            "action": "return",
            "reason": "AC04",
            "settle_after_seconds": 0.5,
            "return_after_seconds": 2,
        }
    ]
}


async def test_a_pending_return_survives_a_sigkill(tmp_path) -> None:  # type: ignore[no-untyped-def]
    process = SchemeProcess(tmp_path, rules=RULES)
    await process.start()
    try:
        transfer = outbound(samples.RETURNED_AC04)
        async with process.client() as client:
            ack = await client.connector().submit(transfer)
        assert ack.status is ClearingStatus.ACCEPTED
        process.kill()
        await process.start()
        async with process.client() as client:
            connector = client.connector()
            for _ in range(100):
                page = await connector.returns()
                if page.returns:
                    break
                await asyncio.sleep(0.1)
            [item] = page.returns
            assert (item.message_id, item.reason_code, item.cursor) == (transfer.message_id, "AC04", "1")
            # Due when the rule said on receipt, whatever happened to the process meanwhile.
            assert ack.accepted_at is not None
            assert item.returned_at - ack.accepted_at == dt.timedelta(seconds=2.5)
            report = await connector.status(transfer.message_id)
            assert report.status is ClearingStatus.SETTLED and report.clearing_reference == ack.clearing_reference
            # Resubmitted after the restart: the same transfer, not a second one.
            assert (await connector.submit(transfer)).clearing_reference == ack.clearing_reference
    finally:
        assert process.stop() == 0


async def test_the_shipped_rules_by_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    process = SchemeProcess(tmp_path)
    await process.start()
    try:
        async with process.client() as client:
            connector = client.connector()
            assert (await connector.submit(outbound(samples.REJECTS_AC04))).reason_code == "AC04"
            assert (await connector.submit(outbound(samples.iban("444")))).reason_code == "AM04"
            assert (await connector.submit(outbound())).status is ClearingStatus.SETTLED
    finally:
        process.stop()


def test_a_bad_rules_file_stops_start_up(tmp_path) -> None:  # type: ignore[no-untyped-def]
    process = SchemeProcess(tmp_path, rules="rules:\n  - name: r\n    action: reject\n")
    finished = subprocess.run(
        [sys.executable, "-m", "schemesim"], cwd=REPO, env=process.environment(), capture_output=True, timeout=60
    )
    assert finished.returncode != 0
    assert b"reject needs a reason" in finished.stdout + finished.stderr


def test_the_environment_trusts_the_test_issuer_or_identity(tmp_path) -> None:  # type: ignore[no-untyped-def]
    own = SchemeProcess(tmp_path).environment()
    assert own["OBM_TOKEN_ISSUER"] == "https://identity.test" and own["OBM_SCHEME_JWKS_FILE"].endswith(".json")
    mesh = SchemeProcess(tmp_path, identity_target="127.0.0.1:1").environment()
    assert mesh["OBM_IDENTITY_TARGET"] == "127.0.0.1:1" and "OBM_SCHEME_JWKS_FILE" not in mesh
