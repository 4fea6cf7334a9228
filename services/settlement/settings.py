"""Settlement settings, read once at start-up."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from meshlib.app import ServiceSettings


class SettlementSettings(ServiceSettings):
    """Settlement needs only the shared settings: its store and the account ledger's address
    (``account_target``, read by reconciliation)."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)

    # Close every currency's open window on this schedule (None: only the operator closes).
    window_close_interval_seconds: float | None = Field(default=None, gt=0)
    window_currencies: tuple[str, ...] = ("EUR",)
