"""Identity's wiring: the one place that builds its adapters and service layer."""

from __future__ import annotations

import datetime as dt
from functools import partial
from pathlib import Path

from meshlib.app import Runtime, ServiceSpec, Wiring
from meshlib.server import ServiceRegistration
from openbank.identity.v1 import token_pb2_grpc
from services.identity.keys_service import KeyService
from services.identity.servicer import TokenServicer
from services.identity.settings import IdentitySettings
from services.identity.unit_of_work import IdentityUnitOfWork

VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"


async def wire(runtime: Runtime) -> Wiring:
    """Build identity's layers on the runtime's database."""
    settings: IdentitySettings = runtime.settings
    uow = partial(IdentityUnitOfWork, runtime.database)
    keys = KeyService(uow, settings.passphrase(), dt.timedelta(seconds=settings.access_token_ttl_seconds))
    runtime.extras["keys"] = keys
    await keys.ensure_active_key()
    return Wiring(
        registrations=[
            ServiceRegistration(
                "openbank.identity.v1.TokenService",
                TokenServicer(keys),
                token_pb2_grpc.add_TokenServiceServicer_to_server,
            ),
        ]
    )


def _own_jwks(runtime: Runtime):  # type: ignore[no-untyped-def]
    async def fetch():  # type: ignore[no-untyped-def]
        return await runtime.extras["keys"].jwks()

    return fetch


SPEC = ServiceSpec(
    name="identity", versions_dir=VERSIONS_DIR, settings_class=IdentitySettings, wire=wire, jwks_fetcher=_own_jwks
)
