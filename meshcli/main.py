"""``openbank-mesh``: one console script for developers and operators."""

from __future__ import annotations

import argparse
import asyncio
import os
import runpy
import sys
from pathlib import Path

from meshcli.applications import add_application_parser
from meshcli.audit import add_audit_parser
from meshcli.capabilities import add_capability_parser
from meshcli.commands import add_operator_parsers, run_operator_command
from meshcli.disputes import add_dispute_parser
from meshcli.isolation import add_isolation_parser
from meshcli.participants import add_participant_parser
from meshcli.payments import add_payment_parser
from meshcli.review import add_review_parser

PROCESS_MODULES = {
    "gateway": "gateway",
    "identity": "services.identity",
    "account": "services.account",
    "payment": "services.payment",
    "settlement": "services.settlement",
    "bankweb": "bankweb",
    "console": "bankweb.console",
    # The scheme simulator (development and sandboxes: another bank behind the clearing scheme).
    "schemesim": "schemesim",
}

# The processes with a database of their own: where each one's ServiceSpec is.
MIGRATED_SERVICES = {
    "identity": "services.identity.bootstrap",
    "account": "services.account.bootstrap",
    "payment": "services.payment.bootstrap",
    "settlement": "services.settlement.bootstrap",
    "schemesim": "schemesim.bootstrap",
    # The operator console's audit trail (not a ServiceSpec: bankweb.console.audit_store).
    "console": "bankweb.console.audit_store",
}


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 3600 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command tree (each command has --help)."""
    parser = argparse.ArgumentParser(prog="openbank-mesh", description="OpenBank Mesh developer and operator tool.")
    # TLS towards the services (the production overlay), before the command:
    # openbank-mesh --tls-ca ca.crt --tls-cert me.crt --tls-key me.key partner list
    tls = parser.add_argument_group("TLS to the services (default: OBM_CLI_TLS_* or the mesh.json of --data-dir)")
    tls.add_argument("--tls-ca", type=Path, help="the CA that signed the services' certificates (turns TLS on)")
    tls.add_argument("--tls-cert", type=Path, help="the CLI's client certificate, for mTLS (with --tls-key)")
    tls.add_argument("--tls-key", type=Path, help="its private key")
    tls.add_argument("--tls-server-name", help="the name in the services' certificates, if not the host dialled")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run the whole mesh locally (SQLite, in-process limiter)")
    up.add_argument("--data-dir", type=Path, default=Path("data"), help="where the SQLite files live")
    up.add_argument(
        "--base-port", type=int, default=50050, help="gateway port; identity, account, payment, settlement follow"
    )
    up.add_argument(
        "--replicas",
        type=int,
        default=1,
        choices=range(1, 9),
        metavar="N",
        help="N processes of every service and the gateway, on PostgreSQL and Redis (DATABASE_URL and "
        "REDIS_URL, else started locally), balanced round robin",
    )
    up.add_argument(
        "--ready-timeout",
        type=_positive_seconds,
        default=120.0,
        help="seconds each process may take to answer its health check after all have started (default 120); "
        "a process that exits is reported at once",
    )
    serve = commands.add_parser("serve", help="run one process (what the container image runs)")
    serve.add_argument("process", choices=sorted(PROCESS_MODULES), help="which process")
    migrate = commands.add_parser(
        "migrate", help="bring one service's database to this version and exit (the release's migration Job)"
    )
    migrate.add_argument("service", choices=sorted(MIGRATED_SERVICES), help="whose database")
    demo = commands.add_parser("demo", help="a wallet's whole journey against the running local mesh")
    demo.add_argument("--data-dir", type=Path, default=Path("data"), help="the local mesh's data folder")
    demo.add_argument("--host", default="127.0.0.1", help="where the mesh listens")
    demo.add_argument(
        "--base-port", type=int, help="the gateway's port of an `up --base-port` mesh (default: what up recorded)"
    )
    add_operator_parsers(commands)
    add_audit_parser(commands)
    add_payment_parser(commands)
    add_review_parser(commands)
    add_dispute_parser(commands)
    add_application_parser(commands)
    add_capability_parser(commands)
    add_isolation_parser(commands)
    add_participant_parser(commands)
    try:
        from meshcli import conformance
    except ImportError:  # pragma: no cover - the conformance suite ships with the CLI
        pass
    else:
        conformance.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    if (args.tls_cert or args.tls_key or args.tls_server_name) and not args.tls_ca:
        print("--tls-cert, --tls-key and --tls-server-name need --tls-ca", file=sys.stderr)
        return 2
    if args.tls_ca:  # every operator connection reads these (meshcli.operator.client_tls)
        for name, value in (
            ("CA_FILE", args.tls_ca),
            ("CERT_FILE", args.tls_cert),
            ("KEY_FILE", args.tls_key),
            ("SERVER_NAME", args.tls_server_name),
        ):
            os.environ[f"OBM_CLI_TLS_{name}"] = str(value) if value else ""
    if args.command == "up":
        from meshcli.mesh import run_up

        if args.replicas > 1:
            from meshcli.replicas import local_stores

            with local_stores(args.data_dir) as stores:
                return asyncio.run(
                    run_up(
                        args.data_dir,
                        args.base_port,
                        replicas=args.replicas,
                        stores=stores,
                        ready_timeout=args.ready_timeout,
                    )
                )
        return asyncio.run(run_up(args.data_dir, args.base_port, ready_timeout=args.ready_timeout))
    if args.command == "migrate":
        import importlib

        from meshlib.app import run_migration

        if args.service == "console":
            from bankweb.console.audit_store import run_console_migration

            return run_console_migration()
        return run_migration(importlib.import_module(MIGRATED_SERVICES[args.service]).SPEC)
    if args.command == "serve":
        runpy.run_module(PROCESS_MODULES[args.process], run_name="__main__")
        return 0
    if args.command == "demo":
        from meshcli.demo import run_demo

        return asyncio.run(run_demo(args.data_dir, args.host, args.base_port))
    if args.command == "audit":
        from meshcli.audit import run_audit_command

        return asyncio.run(run_audit_command(args))
    if args.command == "participant":
        from meshcli.participants import run_participant_command

        return asyncio.run(run_participant_command(args))
    if args.command == "payment":
        from meshcli.payments import run_payment_command

        return asyncio.run(run_payment_command(args))
    if args.command == "review":
        from meshcli.review import run_review_command

        return asyncio.run(run_review_command(args))
    if args.command == "dispute":
        from meshcli.disputes import run_dispute_command

        return asyncio.run(run_dispute_command(args))
    if args.command == "application":
        from meshcli.applications import run_application_command

        return asyncio.run(run_application_command(args))
    if args.command == "capability":
        from meshcli.capabilities import run_capability_command

        return asyncio.run(run_capability_command(args))
    if args.command == "isolation":
        from meshcli.isolation import run_isolation_command

        return asyncio.run(run_isolation_command(args))
    if args.command == "conformance":
        from meshcli import conformance

        return asyncio.run(conformance.run(args))
    return asyncio.run(run_operator_command(args))


if __name__ == "__main__":
    sys.exit(main())
