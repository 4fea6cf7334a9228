"""Account service settings, read once at start-up."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from meshlib.app import ServiceSettings
from meshlib.config import OutboxRelaySettings


class AccountSettings(ServiceSettings, OutboxRelaySettings):
    """How often expired holds are released, and how many per sweep; how often read counts are saved."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)

    hold_expiry_interval_seconds: float = Field(default=1.0, gt=0, le=300)
    hold_expiry_batch_size: int = Field(default=200, ge=1, le=10_000)
    # How often the reads counted for the customer's dashboard are saved (read_activity.py).
    read_activity_flush_seconds: float = Field(default=2.0, gt=0, le=300)
    # Partner events (issue 23): the movements outbox (each posting on a customer's account)
    # and the credit events are relayed to identity's partner event log (OBM_EVENT_*, from
    # OutboxRelaySettings). Deadline of one AppendEvents call to identity:
    event_relay_deadline_seconds: float = Field(default=5.0, gt=0, le=30)
