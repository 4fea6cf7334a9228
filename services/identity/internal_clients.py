"""The mesh's own OAuth clients (services, the bank's customer app, operator tools).

Read once at start-up from ``OBM_INTERNAL_CLIENTS_FILE`` (YAML or JSON) and/or
``OBM_INTERNAL_CLIENTS`` (JSON): a list of ``{client_id, secret | secret_hash, scopes}``.
A plain ``secret`` (development only: refused unless OBM_ALLOW_DEV_SECRETS) is hashed on
load and never kept; ``secret_hash`` is an Argon2id PHC string (or a keyed ``hmac-sha256$``
hash). Their tokens carry ``sub = service:<client_id>`` and no partner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.identity.domain.partners import ALL_SCOPES
from services.identity.domain.secrets import ClientSecretHasher


class InternalClientsError(ValueError):
    """The internal clients configuration is unusable (start-up fails loudly)."""


@dataclass(frozen=True)
class InternalClient:
    """One of the mesh's own clients."""

    client_id: str
    secret_hash: str
    scopes: frozenset[str]

    @property
    def subject(self) -> str:
        """The ``sub`` of its tokens."""
        return f"service:{self.client_id}"


def _entries(path: Path | None, inline_json: str | None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    if path is not None:
        document = yaml.safe_load(path.read_text()) or []
        entries.extend(document.get("clients", []) if isinstance(document, dict) else document)
    if inline_json:
        document = json.loads(inline_json)
        entries.extend(document.get("clients", []) if isinstance(document, dict) else document)
    return entries


def load_internal_clients(
    path: Path | None,
    inline_json: str | None,
    hasher: ClientSecretHasher,
    *,
    allow_plain_secrets: bool = True,
) -> dict[str, InternalClient]:
    """Parse, validate and hash the configured internal clients, by client id."""
    clients: dict[str, InternalClient] = {}
    for index, entry in enumerate(_entries(path, inline_json)):
        if not isinstance(entry, dict):
            raise InternalClientsError(f"internal client #{index} is not a mapping")
        client_id = str(entry.get("client_id", ""))
        scopes = entry.get("scopes", [])
        if isinstance(scopes, str):
            scopes = scopes.split()
        if not client_id or client_id in clients:
            raise InternalClientsError(f"internal client #{index}: missing or duplicate client_id")
        unknown = set(scopes) - ALL_SCOPES
        if not scopes or unknown:
            raise InternalClientsError(f"internal client {client_id!r}: bad scopes {sorted(unknown) or '(none)'}")
        if entry.get("secret_hash"):
            secret_hash = str(entry["secret_hash"])
        elif entry.get("secret"):
            if not allow_plain_secrets:
                raise InternalClientsError(
                    f"internal client {client_id!r}: a plain secret is for a local mesh only; "
                    "give secret_hash (or set OBM_ALLOW_DEV_SECRETS=true on a development mesh)"
                )
            secret_hash = hasher.hash(str(entry["secret"]))
        else:
            raise InternalClientsError(f"internal client {client_id!r}: needs secret or secret_hash")
        clients[client_id] = InternalClient(client_id, secret_hash, frozenset(scopes))
    return clients
