"""The peer call both of payment's relays to identity's partner event log use (the payment
events' outbox, dynamic isolation's changes): a token of its own with ``events:write``, so that
a deployment not granting it loses only the relays."""

from __future__ import annotations

import grpc

from meshlib.app import Runtime
from meshlib.auth.service_tokens import ServiceTokenSource
from meshlib.clients import PeerCaller
from services.payment.settings import PaymentSettings

EVENTS_WRITE_SCOPE = "events:write"


def identity_events_peer(runtime: Runtime) -> tuple[grpc.aio.Channel, PeerCaller] | None:
    """Identity's channel and the call to append events with; None when relaying is off or the
    service has no client credentials."""
    settings: PaymentSettings = runtime.settings
    if not (settings.event_relay and settings.service_client_id and settings.service_client_secret):
        return None
    channel = runtime.channel(settings.identity_target)
    tokens = ServiceTokenSource(
        channel, settings.service_client_id, settings.service_client_secret, [EVENTS_WRITE_SCOPE]
    )
    return channel, PeerCaller(tokens.token, deadline_seconds=settings.downstream_deadline_seconds, attempts=1)
