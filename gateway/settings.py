"""Gateway settings, read from the environment at start-up."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from meshlib.app import ServiceSettings


class GatewaySettings(ServiceSettings):
    """Where the upstream services are and how long a partner call may last."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)

    # A partner's deadline is capped so that a stuck upstream cannot hold a slot forever.
    max_call_deadline_seconds: float = Field(default=30.0, gt=0, le=600)
    max_stream_deadline_seconds: float = Field(default=3600.0, gt=0)
    # The longest the gateway waits for an upstream on one unary call, per rate-limit class of
    # the rpc (the contract's rate_limit_class; JSON in OBM_UPSTREAM_DEADLINES), else
    # upstream_call_timeout_seconds; a partner's shorter deadline wins. Running out is
    # UPSTREAM_TIMEOUT and counts against the replica (gateway.upstreams).
    upstream_call_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    upstream_deadlines: dict[str, float] = Field(
        default_factory=lambda: {"token": 5.0, "consents": 5.0, "reads": 5.0, "settlement": 10.0, "payments": 15.0}
    )
    # Outlier detection per upstream replica: this many transport failures or upstream
    # timeouts in a row eject it for upstream_ejection_seconds (doubling while it stays bad,
    # up to upstream_max_ejection_seconds); a health check brings it back.
    upstream_failures_to_eject: int = Field(default=3, ge=1, le=1000)
    upstream_ejection_seconds: float = Field(default=1.0, gt=0, le=300)
    upstream_max_ejection_seconds: float = Field(default=10.0, gt=0, le=3600)
    # Rate limits (YAML, reloaded when it changes); Redis when redis_url is set.
    ratelimit_config_file: Path = Path(__file__).parent / "ratelimits.yaml"
    ratelimit_reload_seconds: float = Field(default=2.0, gt=0)
    ratelimit_key_prefix: str = "obm:rl:"
    # A busy partner's calls are admitted from short leases of units taken from the shared
    # bucket ahead of them (gateway.ratelimit.RedisBackend); 0 decides every call in Redis.
    ratelimit_lease_seconds: float = Field(default=0.05, ge=0, le=1)
    ratelimit_max_lease: int = Field(default=64, ge=0, le=10_000)
    # With Redis, each open stream holds a slot of its partner's cap shared by every replica
    # (gateway.streams) for this long unless renewed: a crashed replica's slots lapse by then.
    stream_slot_lease_seconds: float = Field(default=30.0, gt=0, le=600)
    # The audit trail: hash-chained JSON-lines files, one chain per replica (named by its
    # host name, a pod's name in Kubernetes), in audit_dir (default: <data_dir>/audit), written
    # and fsynced every audit_flush_seconds; files older than audit_retention_days are deleted.
    audit_dir: Path | None = None
    audit_replica: str = Field(default_factory=socket.gethostname)
    audit_flush_seconds: float = Field(default=0.2, gt=0, le=10)
