"""An operator's connection to the mesh: channels to each service and the operator's
service token (the local mesh's ``operator`` internal client).

Plaintext by default (the local mesh). Against a mesh that serves TLS (the production
overlay), the CLI verifies the services with a CA and, for mTLS, shows its own certificate:
``openbank-mesh --tls-ca CA --tls-cert CRT --tls-key KEY <command>``, or the same in
``OBM_CLI_TLS_CA_FILE`` / ``_CERT_FILE`` / ``_KEY_FILE`` / ``_SERVER_NAME``, or a ``"tls"``
object in the data directory's ``mesh.json`` (``up`` writes it when its mesh serves TLS).
Outside the local mesh the operator's client secret comes from ``OBM_OPERATOR_CLIENT_SECRET``
(or ``_FILE``) instead of ``internal-clients.json``; ``OBM_OPERATOR_CLIENT_ID`` names it.
"""

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


@dataclass(frozen=True)
class ClientTls:
    """How the CLI speaks TLS to the services: the CA it trusts, its own certificate and key
    for mTLS (both or neither), and the name the services' certificates carry when it is not
    the host dialled."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials (files read now; a missing one says which)."""
        if (self.cert_file is None) != (self.key_file is None):
            raise SystemExit("TLS: give both --tls-cert and --tls-key (mTLS), or neither")

        def read(path: Path | None, what: str) -> bytes | None:
            if path is None:
                return None
            try:
                return path.read_bytes()
            except OSError as error:
                raise SystemExit(f"TLS: cannot read the {what} {path}: {error.strerror}") from None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file, "CA file"),
            private_key=read(self.key_file, "key file"),
            certificate_chain=read(self.cert_file, "certificate file"),
        )


def client_tls(data_dir: Path) -> ClientTls | None:
    """The TLS settings from the environment (the global --tls-* options set it), else from
    ``mesh.json``; None for plaintext."""

    def path(value: object) -> Path | None:
        return Path(str(value)) if value else None

    ca = os.environ.get("OBM_CLI_TLS_CA_FILE")
    if ca:
        return ClientTls(
            Path(ca),
            path(os.environ.get("OBM_CLI_TLS_CERT_FILE")),
            path(os.environ.get("OBM_CLI_TLS_KEY_FILE")),
            os.environ.get("OBM_CLI_TLS_SERVER_NAME") or None,
        )
    mesh_file = data_dir / "mesh.json"
    try:
        recorded = json.loads(mesh_file.read_text()).get("tls") if mesh_file.exists() else None
    except (OSError, ValueError, AttributeError):
        raise SystemExit(f"{mesh_file} is not readable: remove it or give --base-port") from None
    if not isinstance(recorded, dict) or not recorded.get("ca"):
        return None
    return ClientTls(
        Path(recorded["ca"]), path(recorded.get("cert")), path(recorded.get("key")), recorded.get("server_name")
    )


@dataclass
class Operator:
    """Channels to the four services plus bearer metadata for operator calls."""

    data_dir: Path
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    client_id: str = field(default_factory=lambda: os.environ.get("OBM_OPERATOR_CLIENT_ID", "operator"))
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    _tokens: ServiceTokenSource | None = None
    # None: from the environment or mesh.json (client_tls); plaintext when neither says.
    tls: ClientTls | None = None

    def __post_init__(self) -> None:
        if self.tls is None:
            self.tls = client_tls(self.data_dir)

    def channel(self, service: str) -> grpc.aio.Channel:
        """A channel to ``identity``, ``account``, ``payment``, ``settlement`` or ``gateway``."""
        if service not in self.channels:
            # The same OBM_<SERVICE>_TARGET variables the services use point the CLI elsewhere.
            target = os.environ.get(f"OBM_{service.upper()}_TARGET") or f"{self.host}:{self.ports[service]}"
            if self.tls is None:
                self.channels[service] = grpc.aio.insecure_channel(target)
            else:
                options = [("grpc.ssl_target_name_override", self.tls.server_name)] if self.tls.server_name else []
                self.channels[service] = grpc.aio.secure_channel(target, self.tls.credentials(), options=options)
        return self.channels[service]

    def secret(self, client_id: str) -> str:
        """An internal client's secret: the operator's from OBM_OPERATOR_CLIENT_SECRET(_FILE) when
        set, else from the local mesh's credentials file."""
        if client_id == self.client_id:
            secret_file = os.environ.get("OBM_OPERATOR_CLIENT_SECRET_FILE")
            if secret_file:
                try:
                    return Path(secret_file).read_text().strip()
                except OSError as error:
                    raise SystemExit(f"cannot read {secret_file}: {error.strerror}") from None
            if os.environ.get("OBM_OPERATOR_CLIENT_SECRET"):
                return os.environ["OBM_OPERATOR_CLIENT_SECRET"]
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


def _looks_like_tls(text: str) -> bool:
    """Whether a connection failure reads like TLS (a plaintext CLI against TLS, or a bad CA)."""
    lowered = text.lower()
    return any(word in lowered for word in ("ssl", "tls", "handshake", "certificate"))


def command_failed(error: BaseException, *, with_metadata: bool = False) -> int:
    """Say on stderr why an operator command failed (never a traceback); the exit code, 1.

    An rpc's refusal is printed with its code, reason and message (and its ErrorInfo metadata
    when asked); UNAVAILABLE, or no operator token at all, adds the likely cause."""
    from meshlib.errors import MeshError
    from meshlib.grpc_errors import decode_rpc_error

    hint = (
        " (is the mesh running? `openbank-mesh up`; a mesh serving TLS needs --tls-ca, "
        "and --tls-cert with --tls-key for mTLS)"
    )
    tls_hint = " (a TLS handshake failed: check --tls-ca, --tls-cert and --tls-key)"
    if isinstance(error, grpc.aio.AioRpcError):
        failure = decode_rpc_error(error)
        unreachable = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        down = (tls_hint if _looks_like_tls(str(error.details())) else hint) if unreachable else ""
        print(f"failed: {error.code().name} {failure.reason}: {failure.message}{down}", file=sys.stderr)
        if with_metadata:
            for key, value in sorted(failure.metadata.items()):
                print(f"  {key}: {value}", file=sys.stderr)
    elif isinstance(error, MeshError):  # the operator's token could not be had: identity unreachable
        print(f"failed: {error.reason}: {error}{tls_hint if _looks_like_tls(str(error)) else hint}", file=sys.stderr)
    else:
        raise error
    return 1
