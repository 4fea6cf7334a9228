"""The simulator's wiring: the one place that builds its adapters and use cases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from meshlib.app import Runtime, ServiceSpec, Wiring
from meshlib.auth.jwks_client import identity_jwks_fetcher
from meshlib.auth.verifier import static_jwks
from meshlib.periodic import Periodic
from meshlib.server import Lifecycle, ServiceRegistration
from meshlib.storage import Transactions
from openbank.scheme.v1 import scheme_pb2_grpc
from schemesim.clearing import ClearingService, Clock, utc_now
from schemesim.domain.rules import RuleSet, load_rules
from schemesim.servicer import ClearingServicer
from schemesim.settings import SchemeSettings
from schemesim.unit_of_work import SchemeUnitOfWork

NAME = "schemesim"
VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"


@dataclass(frozen=True)
class SchemeComponents:
    """What the wiring built (for tests)."""

    clearing: ClearingService
    rules: RuleSet


def jwks_fetcher(runtime: Runtime) -> Callable[[], Awaitable[dict[str, Any]]]:
    """The keys callers' tokens are checked with: a JWKS file when configured, else identity's.

    Only signature, issuer, audience, expiry and scopes are checked: the scheme is not the
    bank, and asks the bank's identity nothing about revocations.
    """
    settings: SchemeSettings = runtime.settings
    if settings.scheme_jwks_file is not None:
        return static_jwks(settings.scheme_jwks_file.read_text())
    return identity_jwks_fetcher(runtime.channel(settings.identity_target))


async def wire(runtime: Runtime, *, clock: Clock = utc_now) -> Wiring[SchemeComponents]:
    """Build the simulator on the runtime's database; a bad rules file fails start-up."""
    settings: SchemeSettings = runtime.settings
    rules = load_rules(settings.scheme_rules_file)
    clearing = ClearingService(
        Transactions(partial(SchemeUnitOfWork, runtime.database)),
        rules,
        clock=clock,
        silence_seconds=settings.scheme_silence_seconds,
    )
    collector = Periodic("schemesim-returns", settings.scheme_returns_interval_seconds, clearing.collect_returns)
    lifecycle = Lifecycle(on_start=[collector.start], on_stop=[collector.stop])
    return Wiring(
        components=SchemeComponents(clearing, rules),
        lifecycle=lifecycle,
        registrations=[
            ServiceRegistration(
                "openbank.scheme.v1.ClearingService",
                ClearingServicer(clearing),
                scheme_pb2_grpc.add_ClearingServiceServicer_to_server,
            )
        ],
    )


def scheme_spec(*, clock: Clock = utc_now) -> ServiceSpec[SchemeComponents]:
    """The simulator's spec; tests that move time on pass their own ``clock``."""
    return ServiceSpec(
        name=NAME,
        versions_dir=VERSIONS_DIR,
        settings_class=SchemeSettings,
        wire=partial(wire, clock=clock),
        jwks_fetcher=jwks_fetcher,
    )


SPEC = scheme_spec()
