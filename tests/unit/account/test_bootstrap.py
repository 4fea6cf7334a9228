"""Which consent lookup the service wires."""

from __future__ import annotations

import grpc
import pytest

from meshlib.app import Runtime
from meshlib.auth.consent_client import IdentityConsentLookup
from meshlib.auth.wiring import UnavailableConsentLookup
from meshlib.errors import Unavailable
from services.account.bootstrap import identity_consent_lookup
from services.account.settings import AccountSettings


class _Runtime(Runtime):
    def channel(self, target: str) -> grpc.aio.Channel:
        # Never connected: the lookup only builds stubs on it.
        if target not in self.channels:
            self.channels[target] = grpc.aio.insecure_channel("127.0.0.1:9")
        return self.channels[target]


async def test_identity_lookup_with_service_credentials_else_unavailable() -> None:
    with_credentials = _Runtime(
        settings=AccountSettings(service_client_id="svc-account", service_client_secret="s3cret"),
        database=None,
        verifier=None,  # type: ignore[arg-type]
    )
    assert isinstance(identity_consent_lookup(with_credentials), IdentityConsentLookup)
    assert "consent_bus" in with_credentials.extras
    for channel in with_credentials.channels.values():
        await channel.close()
    without = _Runtime(settings=AccountSettings(), database=None, verifier=None)  # type: ignore[arg-type]
    lookup = identity_consent_lookup(without)
    assert isinstance(lookup, UnavailableConsentLookup)
    with pytest.raises(Unavailable):
        await lookup.get("c1", partner_id="p1")
