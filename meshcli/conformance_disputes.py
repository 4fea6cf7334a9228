"""The conformance check of a partner's disputes (DisputeService): listed with a
client-credentials token, every page walked, each one readable; another's is NOT_FOUND.

A mixin of :class:`meshcli.conformance_checks.ConformanceRun` (its client).
"""

from __future__ import annotations

import grpc

from meshcli.conformance_support import _expect, expect_error, ob
from openbank.payment.v1 import dispute_pb2


class DisputeChecks:
    """Checks of DisputeService."""

    client: ob.OpenBankClient

    async def disputes_read(self) -> str:
        listed = [dispute async for dispute in self.client.disputes(page_size=1)]
        for dispute in listed[:3]:
            _expect(dispute.name.startswith("disputes/"), f"name {dispute.name!r}")
            _expect(dispute.state != dispute_pb2.DISPUTE_STATE_UNSPECIFIED, f"{dispute.name} has no state")
            _expect((await self.client.dispute(dispute.name)) == dispute, f"{dispute.name} reads otherwise")
        missing = await expect_error(
            self.client.dispute("disputes/00000000000000000000000000000000"),
            grpc.StatusCode.NOT_FOUND,
            "RESOURCE_NOT_FOUND",
        )
        return f"{len(listed)} dispute(s); {missing}"
