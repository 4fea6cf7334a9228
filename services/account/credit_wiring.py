"""The credit line's wiring inside the account service (issue 28 item 2): its settings, the
use cases, the daily accrual job and the two servicers (its events' relay: bootstrap.py)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from meshlib.auth.consent import ConsentLookup
from meshlib.periodic import Periodic
from meshlib.server import ServiceRegistration
from openbank.credit.v1 import credit_pb2_grpc
from services.account.credit_service import FAILPOINTS, CreditService, DayClock, DayEnd, Failpoint, utc_day_end
from services.account.credit_servicer import CreditServicer, CustomerCreditServicer
from services.account.domain.credit_offers import CreditRules
from services.account.ledger_service import Clock, UowFactory, utc_now

log = logging.getLogger("services.account.credit")

DEFAULT_RULES = Path(__file__).parent / "credit_rules.yaml"
SECONDS_PER_DAY = 86_400


class CreditSettings(BaseSettings):
    """OBM_CREDIT_*: the rules file, the accrual job, and the fast clock of tests and demos."""

    model_config = SettingsConfigDict(env_prefix="OBM_", extra="ignore", frozen=True)

    credit_rules_file: Path = DEFAULT_RULES
    # The bank web app, where customers accept offers (the same variable as identity's).
    bank_web_url: str = "http://127.0.0.1:8443"
    credit_accrual_interval_seconds: float = Field(default=60.0, gt=0, le=3600)
    credit_accrual_lease_seconds: float = Field(default=60.0, gt=0, le=3600)
    # 0: accrual days are UTC days. Above 0, the accrual clock runs this many days per real
    # second from the process's start (tests run a month of accrual in seconds).
    credit_accrual_days_per_second: float = Field(default=0.0, ge=0, le=1000)
    # Crash tests only: exit inside the transaction at this point, before it commits.
    credit_failpoint: str | None = None

    @field_validator("credit_failpoint")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value and value not in FAILPOINTS:
            raise ValueError(f"unknown failpoint {value!r}; known: {', '.join(sorted(FAILPOINTS))}")
        return value or None


def fast_day_clock(clock: Clock, days_per_second: float) -> tuple[DayClock, DayEnd]:
    """The accrual day at ``days_per_second`` days per real second from now (0: the UTC day),
    and when (in real time, as entries are booked) a given accrual day ends."""
    if not days_per_second:
        return (lambda: clock().date()), utc_day_end
    start = clock()
    started = time.monotonic()
    speed = days_per_second * SECONDS_PER_DAY

    def day() -> dt.date:
        elapsed = time.monotonic() - started
        return (start + dt.timedelta(seconds=elapsed * speed)).date()

    def day_end(accrual_day: dt.date) -> dt.datetime:
        return start + (utc_day_end(accrual_day) - start) / speed

    return day, day_end


def exit_at(configured: str | None) -> Failpoint:
    """A hook that kills the process abruptly at the configured point (crash tests)."""

    def hook(point: str) -> None:
        if configured == point:
            log.warning("failpoint reached, exiting", extra={"failpoint": point})
            os._exit(137)

    return hook


class AccrualLoop:
    """The daily accrual job, every few seconds on every replica (each line under its lease),
    and the sweep marking offers past their validity EXPIRED (each once, by its state)."""

    def __init__(self, credit: CreditService, interval_seconds: float) -> None:
        self._credit = credit
        self._periodic = Periodic("credit-accrual", interval_seconds, self._run)

    async def start(self) -> None:
        """Start accruing."""
        await self._periodic.start()

    async def stop(self) -> None:
        """Stop; an interrupted day rolls back and is booked by the next run."""
        await self._periodic.stop()

    async def _run(self) -> None:
        expired = await self._credit.expire_offers()
        if expired:
            log.info("credit offers expired", extra={"offers": expired})
        days = await self._credit.accrue_due()
        if days:
            log.info("credit interest accrued", extra={"days": days})


@dataclass(frozen=True)
class CreditWiring:
    """What the account service's bootstrap adds."""

    service: CreditService
    accrual: AccrualLoop
    registrations: list[ServiceRegistration]
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def credit_wiring(
    uow: UowFactory,
    consents: ConsentLookup,
    settings: CreditSettings | None = None,
) -> CreditWiring:
    """Build the credit line's layers (settings read once, here, unless a test passes them);
    the relay of their outbox is wired with the movements' (services/account/bootstrap.py)."""
    settings = settings or CreditSettings()
    rules = CreditRules.from_mapping(yaml.safe_load(settings.credit_rules_file.read_text()))
    accrual_day, day_end = fast_day_clock(utc_now, settings.credit_accrual_days_per_second)
    service = CreditService(
        uow,
        consents,
        rules,
        clock=utc_now,
        accrual_day=accrual_day,
        day_end=day_end,
        failpoint=exit_at(settings.credit_failpoint),
        lease=dt.timedelta(seconds=settings.credit_accrual_lease_seconds),
    )
    accrual = AccrualLoop(service, settings.credit_accrual_interval_seconds)
    return CreditWiring(
        service=service,
        accrual=accrual,
        on_start=[accrual.start],
        on_stop=[accrual.stop],
        registrations=[
            ServiceRegistration(
                "openbank.credit.v1.CreditService",
                CreditServicer(service, settings.bank_web_url),
                credit_pb2_grpc.add_CreditServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.credit.v1.CustomerCreditService",
                CustomerCreditServicer(service, settings.bank_web_url),
                credit_pb2_grpc.add_CustomerCreditServiceServicer_to_server,
            ),
        ],
    )
