"""Where the local mesh's processes listen, for every command that talks to it.

``openbank-mesh up`` writes ``<data-dir>/mesh.json`` once every process answers (the port of
each, by name) and removes it when it stops. Commands find the mesh in this order: an explicit
``--base-port`` (the gateway's port; the others follow it as ``up --base-port`` placed them),
then ``mesh.json`` in the data directory, then the default ports. ``OBM_<PROCESS>_TARGET``
still overrides one process's address (as the services themselves read it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from meshlib.app import DEFAULT_PORTS

MESH_FILE = "mesh.json"
# The customer pages' and the operator console's ports beside the default gateway port
# (their own defaults).
DEFAULT_BANKWEB_PORT = 8080
DEFAULT_CONSOLE_PORT = 8090
# The scheme simulator's port (python -m schemesim's default).
DEFAULT_SCHEME_PORT = 50060


def add_mesh_options(parser: argparse.ArgumentParser, *, json_rows: bool = False) -> argparse.ArgumentParser:
    """Where a command finds the mesh (``--data-dir``, ``--host``, ``--base-port``), and
    ``--json`` for a command that prints rows."""
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="the local mesh's data folder")
    parser.add_argument("--host", default="127.0.0.1", help="where the services listen")
    parser.add_argument(
        "--base-port", type=int, help="the gateway's port of an `up --base-port` mesh (default: what up recorded)"
    )
    if json_rows:
        parser.add_argument("--json", action="store_true", help="JSON lines, one object per row")
    return parser


def ports_from_base(base_port: int) -> dict[str, int]:
    """Every process's port when the gateway listens on ``base_port`` (``up --base-port``): the
    four services on the next ports, the bank's web pages on 8080 and the operator console on
    8090 by default, else right after them (an offset from 8080 could leave the port range)."""
    offset = base_port - DEFAULT_PORTS["gateway"]
    ports = {name: port + offset for name, port in DEFAULT_PORTS.items()}
    ports["schemesim"] = DEFAULT_SCHEME_PORT + offset
    ports["bankweb"] = DEFAULT_BANKWEB_PORT if offset == 0 else max(ports.values()) + 1
    ports["console"] = DEFAULT_CONSOLE_PORT if offset == 0 else ports["bankweb"] + 1
    if not all(0 < port < 65536 for port in ports.values()):
        raise SystemExit(f"--base-port {base_port} puts a process outside the port range")
    return ports


def write_mesh_file(
    data_dir: Path, ports: dict[str, int], host: str = "127.0.0.1", tls: dict[str, str] | None = None
) -> Path:
    """Record where each process listens (``up`` calls this once all are ready), and how to
    speak TLS to them when they serve it (``meshcli.operator.client_tls`` reads it)."""
    path = data_dir / MESH_FILE
    recorded: dict[str, object] = {"host": host, "ports": ports}
    if tls:
        recorded["tls"] = tls
    path.write_text(json.dumps(recorded, indent=2) + "\n")
    return path


def mesh_file_tls(tls: Any) -> dict[str, str] | None:
    """A ``meshcli.operator.ClientTls`` as mesh.json's ``tls`` object (None: plaintext)."""
    if tls is None:
        return None
    fields = {"ca": tls.ca_file, "cert": tls.cert_file, "key": tls.key_file, "server_name": tls.server_name}
    return {name: str(value) for name, value in fields.items() if value}


def remove_mesh_file(data_dir: Path) -> None:
    """The mesh stopped: nothing listens there any more."""
    (data_dir / MESH_FILE).unlink(missing_ok=True)


def mesh_ports(data_dir: Path, base_port: int | None = None) -> dict[str, int]:
    """The ports to use: ``--base-port``, else the running mesh's file, else the defaults."""
    if base_port is not None:
        return ports_from_base(base_port)
    path = data_dir / MESH_FILE
    if path.exists():
        try:
            recorded = json.loads(path.read_text())["ports"]
            return {str(name): int(port) for name, port in recorded.items()}
        except (OSError, ValueError, KeyError, TypeError):
            raise SystemExit(f"{path} is not readable: remove it or give --base-port") from None
    return ports_from_base(DEFAULT_PORTS["gateway"])
