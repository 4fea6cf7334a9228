"""Payment settings, read once at start-up."""

from pydantic_settings import SettingsConfigDict

from meshlib.app import ServiceSettings


class PaymentSettings(ServiceSettings):
    """Payment service settings (the saga's deadlines and rules arrive with its issue)."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)
