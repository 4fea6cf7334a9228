"""Payment settings, read once at start-up."""

import datetime as dt
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from meshlib.app import InsecureSettings, ServiceSettings
from meshlib.config import OutboxRelaySettings
from meshlib.iban import is_bic
from services.payment.domain.saga import DEFAULT_RESUME_ATTEMPTS, failpoint_names
from services.payment.domain.schedules import SCHEDULER_FAILPOINTS

DEFAULT_RULES_FILE = Path(__file__).parent / "risk_rules.yaml"
DEFAULT_FEE_SCHEDULE_FILE = Path(__file__).parent / "fee_schedule.yaml"
DEFAULT_ISOLATION_POLICY_FILE = Path(__file__).parent / "isolation_policy.yaml"


# The step-up secret of the local mesh and tests (payment warns when it runs with it).
LOCAL_STEP_UP_SECRET = "local-mesh-step-up-secret"
MIN_STEP_UP_SECRET_BYTES = 32


class PaymentSettings(ServiceSettings, OutboxRelaySettings):
    """Payment service settings: downstream deadlines, the saga's lease, recovery and rules."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)

    # Deadline of every call to account, settlement and identity.
    downstream_deadline_seconds: float = Field(default=2.0, gt=0, le=30)
    # Attempts per downstream call when it answers UNAVAILABLE (backoff in between).
    downstream_attempts: int = Field(default=3, ge=1, le=10)
    # Lifetime of a ledger hold: far longer than the saga's worst case, so only a payment
    # abandoned for this long sees its hold expire (the recovery loop voids it well before).
    hold_timeout_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # A saga driver owns a payment for this long; recovery only takes over expired leases.
    saga_lease_seconds: float = Field(default=30.0, gt=0)
    # Recovery loop period; 0 disables the loop (RecoverPayments still works).
    recovery_interval_seconds: float = Field(default=5.0, ge=0)
    # A payment whose driver was lost before the pivot (its hold or reservation unanswered) is
    # carried forward by recovery: its steps sent again (idempotent by their keys) on at most
    # this many recovery passes, a saga lease apart (with the defaults about six minutes, far
    # inside a hold's lifetime); the next pass rolls it back (REJECTED SERVICE_UNAVAILABLE).
    # 0 rolls it back at once, as before. A hold found expired is never resumed.
    recovery_resume_attempts: int = Field(default=DEFAULT_RESUME_ATTEMPTS, ge=0, le=100)
    # The speed-ups (batch rpcs to account and settlement, group commit of the journal and of
    # new payments, waves): adapters behind the same ports. False wires the plain per-payment
    # adapters: the same results, lower throughput.
    payment_batching: bool = True
    # CreatePayments start in waves (meshlib.admission): at most this many waves at a time, so
    # the payments of a wave share each downstream batch; 0 starts each payment at once.
    admission_waves: int = Field(default=1, ge=0, le=64)
    # A wave frees its slot after this long even if some of its payments still run.
    admission_release_seconds: float = Field(default=0.5, gt=0, le=30)
    # YAML file of the risk rules (domain/risk.py; configuration, not code), reloaded on change
    # or SIGHUP. OBM_VELOCITY_RULES_FILE, the earlier name, is read when this one is not set
    # (a file of the earlier velocity format reads as rules that refuse).
    risk_rules_file: Path | None = None
    velocity_rules_file: Path = DEFAULT_RULES_FILE
    # How often the rules file is checked for a change (0: on SIGHUP only).
    risk_rules_check_seconds: float = Field(default=2.0, ge=0)
    # Step-up (dynamic linking): the secret the customers' device keys derive from (required in
    # production; the default only serves the local mesh and tests), and how long a payment
    # waits for the customer's code; review: how long it waits for an operator (then it is
    # refused); how often the expiry sweep runs (0: never).
    step_up_secret: str = LOCAL_STEP_UP_SECRET
    step_up_wait_seconds: float = Field(default=600.0, gt=0)
    review_wait_seconds: float = Field(default=86_400.0, gt=0)
    risk_expiry_interval_seconds: float = Field(default=5.0, ge=0)
    # Identity's risk signals (failed sign-ins): how long the risk decision waits for them (then
    # it decides without), and how long a customer's are remembered (0: asked for each payment).
    identity_signals_deadline_seconds: float = Field(default=0.3, gt=0, le=5)
    identity_signals_cache_seconds: float = Field(default=5.0, ge=0)
    # YAML file of the fee schedule (domain/fees.py); the shipped one charges nothing.
    fee_schedule_file: Path = DEFAULT_FEE_SCHEDULE_FILE
    # The bank's fee-income ledger account per currency (JSON, e.g. {"EUR": "<account id>"}):
    # where fees are credited. Needed when the schedule charges anything; a payment in a
    # currency without one is charged nothing.
    fee_income_accounts: dict[str, str] = Field(default_factory=dict)
    # How long partner limits and settlement participants are cached.
    directory_cache_seconds: float = Field(default=30.0, ge=0)
    # WatchPayments: table poll period and open streams allowed per partner (per replica).
    watch_poll_seconds: float = Field(default=0.1, gt=0)
    max_streams_per_partner: int = Field(default=5, ge=1)
    # Partner events (issue 23): the outbox tail wakes this replica's WatchPayments streams
    # (one query per event_tail_seconds, whatever the number of streams; false: every stream
    # polls every watch_poll_seconds), and one replica relays the outbox to identity's partner
    # event log (OBM_EVENT_*, from OutboxRelaySettings).
    event_fanout: bool = True
    # Crash testing only: the process exits abruptly (os._exit(137)) at this saga point:
    # "after_<step>_started" (recorded, not sent) or "after_<step>" (the call succeeded), for
    # the plans' steps (hold_funds, reserve_position, post_funds, commit_obligation,
    # void_funds, release_obligation). An unknown name is refused at start-up.
    # Also the scheduler's points: "after_execution_claimed" and "after_execution_made" (the
    # execution's payment is made, the order not yet advanced).
    payment_failpoint: str | None = None
    # The scheduler of future-dated payments and standing orders: how often it looks for due
    # executions (0: never, e.g. a replica that only serves calls), how long a replica holds
    # one it took, and how late an execution may still run (the catch-up rule after downtime).
    schedule_interval_seconds: float = Field(default=1.0, ge=0)
    schedule_lease_seconds: float = Field(default=30.0, gt=0)
    schedule_catch_up_seconds: float = Field(default=3 * 24 * 3600.0, gt=0)
    # Sandbox time travel: the scheduler's clock runs this many times faster than the wall
    # clock from schedule_time_anchor (ISO 8601), so a partner can watch a year of a monthly
    # order in minutes. 1 (the default) is the wall clock; only for sandboxes and tests.
    schedule_time_scale: float = Field(default=1.0, ge=1.0, le=1_000_000)
    schedule_time_anchor: dt.datetime | None = None
    # Payments to other banks, through the interbank clearing scheme (schemesim locally): its
    # gRPC target (unset: EXTERNAL_TRANSFER is refused UNAVAILABLE), the bank's BIC there (the
    # debtor agent of every transfer), the deadline of one submission (the longest the saga
    # waits for an acknowledgement before it asks the status instead), how soon a payment
    # waiting for the scheme is asked again, and how often the returns feed is read.
    scheme_target: str | None = None
    scheme_bank_bic: str = "OBMEDEFFXXX"
    scheme_deadline_seconds: float = Field(default=2.0, gt=0, le=60)
    clearing_poll_seconds: float = Field(default=2.0, ge=0)
    clearing_returns_seconds: float = Field(default=5.0, ge=0)
    # Disputes (services/payment/disputes.py): the bank's dispute-loss ledger account per currency
    # (JSON, e.g. {"EUR": "<account id>"}: the bank's share of an accepted dispute is refunded out
    # of it, an account that may go negative), how long after settling a payment may be disputed,
    # how long the bank has to decide (then it is accepted), how often the sweep runs (0: never).
    dispute_loss_accounts: dict[str, str] = Field(default_factory=dict)
    dispute_filing_days: float = Field(default=120.0, gt=0)
    dispute_decision_days: float = Field(default=30.0, gt=0)
    dispute_sweep_seconds: float = Field(default=60.0, ge=0)
    # Dynamic isolation (services/payment/isolation.py): the policy file (reloaded on change, as
    # the risk rules), how often the leased job looks (lease and the change relay; 0: this
    # replica never runs it), how often it goes through every customer, its lease.
    isolation_policy_file: Path = DEFAULT_ISOLATION_POLICY_FILE
    isolation_interval_seconds: float = Field(default=5.0, ge=0)
    isolation_sweep_seconds: float = Field(default=3600.0, gt=0)
    isolation_lease_seconds: float = Field(default=30.0, gt=0)

    @property
    def rules_file(self) -> Path:
        """The risk rules file in force (the newer setting first)."""
        return self.risk_rules_file or self.velocity_rules_file

    @field_validator("scheme_bank_bic")
    @classmethod
    def _bic(cls, value: str) -> str:
        if not is_bic(value):
            raise ValueError(f"{value!r} is not a BIC (8 or 11 characters)")
        return value

    @field_validator("payment_failpoint")
    @classmethod
    def _known_failpoint(cls, value: str | None) -> str | None:
        known = failpoint_names() | SCHEDULER_FAILPOINTS
        if value and value not in known:
            raise ValueError(f"unknown failpoint {value!r}; known: {', '.join(sorted(known))}")
        return value or None

    @model_validator(mode="after")
    def _anchored_time_scale(self) -> "PaymentSettings":
        if self.schedule_time_scale != 1.0 and self.schedule_time_anchor is None:
            raise ValueError("schedule_time_scale needs schedule_time_anchor (the moment the fast clock starts from)")
        return self


def refuse_development_secrets(settings: PaymentSettings) -> None:
    """Start-up check: outside the local mesh the step-up secret must be configured (a mounted
    file), not the one that ships here, and long enough; the customers' device keys derive
    from it, so a known one lets anyone compute their one-time codes."""
    if settings.allow_dev_secrets:
        return
    if settings.step_up_secret == LOCAL_STEP_UP_SECRET:
        raise InsecureSettings(
            "payment refuses the local mesh's step-up secret: set OBM_STEP_UP_SECRET_FILE (a mounted "
            "Secret), or OBM_ALLOW_DEV_SECRETS=true for a local mesh only"
        )
    if len(settings.step_up_secret.encode()) < MIN_STEP_UP_SECRET_BYTES:
        raise InsecureSettings(f"the step-up secret must be at least {MIN_STEP_UP_SECRET_BYTES} bytes")
