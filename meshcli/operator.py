"""An operator's connection to the mesh: channels to each service and the operator's
service token (the local mesh's ``operator`` internal client)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from meshlib.app import DEFAULT_PORTS
from meshlib.auth.service_tokens import ServiceTokenSource

OPERATOR_SCOPES = (
    "identity:admin",
    "ledger:admin",
    "ledger:read",
    "ledger:write",
    "settlement:admin",
    "settlement:write",
    "settlement:read",
    "payments:admin",
    "tokens:introspect",
    "consents:read",
    "audit:read",
)


@dataclass
class Operator:
    """Channels to the four services plus bearer metadata for operator calls."""

    data_dir: Path
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    client_id: str = "operator"
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    _tokens: ServiceTokenSource | None = None

    def channel(self, service: str) -> grpc.aio.Channel:
        """A channel to ``identity``, ``account``, ``payment``, ``settlement`` or ``gateway``."""
        if service not in self.channels:
            # The same OBM_<SERVICE>_TARGET variables the services use point the CLI elsewhere.
            target = os.environ.get(f"OBM_{service.upper()}_TARGET") or f"{self.host}:{self.ports[service]}"
            self.channels[service] = grpc.aio.insecure_channel(target)
        return self.channels[service]

    def secret(self, client_id: str) -> str:
        """An internal client's secret from the local mesh's credentials file."""
        path = self.data_dir / "internal-clients.json"
        if not path.exists():
            raise SystemExit(f"no {path}: start the mesh with `openbank-mesh up` first")
        return json.loads(path.read_text())[client_id]

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        """``authorization`` metadata with the operator's current token."""
        if self._tokens is None:
            self._tokens = ServiceTokenSource(
                self.channel("identity"), self.client_id, self.secret(self.client_id), list(OPERATOR_SCOPES)
            )
        return (("authorization", f"Bearer {await self._tokens.token()}"),)

    async def bank_app_metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata of the bank's customer app (``consents:authorise``)."""
        tokens = ServiceTokenSource(
            self.channel("identity"), "bank-app", self.secret("bank-app"), ["consents:authorise"]
        )
        return (("authorization", f"Bearer {await tokens.token()}"),)

    async def close(self) -> None:
        """Close every channel."""
        for channel in self.channels.values():
            await channel.close()


def command_failed(error: BaseException, *, with_metadata: bool = False) -> int:
    """Say on stderr why an operator command failed (never a traceback); the exit code, 1.

    An rpc's refusal is printed with its code, reason and message (and its ErrorInfo metadata
    when asked); UNAVAILABLE, or no operator token at all, adds the likely cause."""
    from meshlib.errors import MeshError
    from meshlib.grpc_errors import decode_rpc_error

    hint = " (is the mesh running? `openbank-mesh up`)"
    if isinstance(error, grpc.aio.AioRpcError):
        failure = decode_rpc_error(error)
        down = hint if error.code() == grpc.StatusCode.UNAVAILABLE else ""
        print(f"failed: {error.code().name} {failure.reason}: {failure.message}{down}", file=sys.stderr)
        if with_metadata:
            for key, value in sorted(failure.metadata.items()):
                print(f"  {key}: {value}", file=sys.stderr)
    elif isinstance(error, MeshError):  # the operator's token could not be had: identity unreachable
        print(f"failed: {error.reason}: {error}{hint}", file=sys.stderr)
    else:
        raise error
    return 1
