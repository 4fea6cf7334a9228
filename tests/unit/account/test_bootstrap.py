"""Which consent lookup the service wires."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest

from meshlib.app import Runtime
from meshlib.auth.consent_client import IdentityConsentLookup
from meshlib.auth.revocation import RevocationCache
from meshlib.auth.wiring import UnavailableConsentLookup
from meshlib.errors import Unavailable
from meshlib.events import InProcessBus
from services.account.bootstrap import AccountComponents, identity_consents, wire
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
    peers = identity_consents(with_credentials)
    assert isinstance(peers.consents, IdentityConsentLookup)
    assert isinstance(peers.bus, InProcessBus)  # no Redis configured
    for channel in with_credentials.channels.values():
        await channel.close()
    without = _Runtime(settings=AccountSettings(), database=None, verifier=None)  # type: ignore[arg-type]
    lookup = identity_consents(without).consents
    assert isinstance(lookup, UnavailableConsentLookup)
    with pytest.raises(Unavailable):
        await lookup.get("c1", partner_id="p1")


async def test_wiring_returns_its_components_and_runs_the_consent_bus() -> None:
    runtime = _Runtime(
        settings=AccountSettings(service_client_id="svc-account", service_client_secret="s3cret"),
        database=None,
        verifier=SimpleNamespace(revocation=None),  # type: ignore[arg-type]
    )
    wiring = await wire(runtime)
    try:
        # Tokens sent straight to account are checked for revocation too.
        assert isinstance(runtime.verifier.revocation, RevocationCache)
        components = wiring.components
        assert isinstance(components, AccountComponents)
        assert components.admin is not None and components.reads is not None and components.ledger is not None

        def buses(hooks: list) -> list[object]:  # type: ignore[type-arg]
            # A hook is the bus's own method, or IdentityPeers.start (which starts its bus).
            owners = [getattr(hook, "__self__", None) for hook in hooks]
            return [
                getattr(owner, "bus", owner)
                for owner in owners
                if isinstance(getattr(owner, "bus", owner), InProcessBus)
            ]

        [started] = buses(wiring.lifecycle.on_start)
        assert buses(wiring.lifecycle.on_stop) == [started]
        # A test's own lookup has no bus to run.
        plain = await wire(runtime, consent_lookup=lambda _runtime: UnavailableConsentLookup())
        assert buses(plain.lifecycle.on_start) == buses(plain.lifecycle.on_stop) == []
    finally:
        for channel in runtime.channels.values():
            await channel.close()
