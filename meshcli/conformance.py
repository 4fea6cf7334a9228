"""``openbank-mesh conformance``: check that a deployment keeps the public contract.

Pointed at a gateway with a partner's client credentials and a test customer, it drives the
whole partner journey and the contract's promises through the gateway only:

- every public rpc answers (never UNIMPLEMENTED or UNAVAILABLE) with the documented shape;
- errors carry their documented reasons (TOKEN_INVALID, TOKEN_MISSING, INSUFFICIENT_SCOPE,
  RESOURCE_NOT_FOUND, FIELD_INVALID with a BadRequest, PAGE_TOKEN_INVALID, REQUEST_ID_REUSED);
- idempotency (a replay returns the first answer) and AIP-158 pagination behave;
- every internal rpc of the contract stays hidden (UNIMPLEMENTED at the gateway);
- answers carry ``ratelimit-*`` metadata.

The customer's part is played one of two ways:

- with only public endpoints (``--bank-web``): the test customer signs in and decides on the
  bank's own web pages, driven with plain HTTP form posts (the redirect flow from a pushed
  authorisation request back to the partner's registered ``--redirect-uri``, the decoupled
  flow's approvals page). No internal endpoint, no bank credentials: what a partner has;
- with the bank app's internal endpoint and credentials (``--bank-app-*``): the way the bank's
  app authorises (ConsentService.AuthoriseConsent).

``--demo-data-dir`` takes every credential not given from a local mesh.
It prints a PASS/FAIL table and exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from meshcli.conformance_checks import DEFAULT_CUSTOMER_IP, CheckResult, ConformanceConfig, ConformanceRun
from meshcli.targets import MESH_FILE, mesh_ports
from meshlib.app import DEFAULT_PORTS


def format_table(results: list[CheckResult]) -> Iterator[str]:
    """The report: one row per check, then a summary line."""
    width = max((len(r.name) for r in results), default=10)
    yield f"{'RESULT':<6}  {'CHECK':<{width}}  DETAIL"
    for result in results:
        yield f"{'PASS' if result.passed else 'FAIL':<6}  {result.name:<{width}}  {result.detail}"
    failed = sum(not r.passed for r in results)
    yield f"\n{len(results) - failed} passed, {failed} failed"


DESCRIPTION = (
    "Drive a partner's journey through a gateway and check the contract: every public rpc answers, "
    "errors carry their documented reasons, idempotency and pagination behave, internal rpcs stay "
    "hidden, rate-limit metadata is present. Exits 1 when any check fails."
)


def add_parser(subparsers: Any) -> None:
    """Add the ``conformance`` command to ``openbank-mesh``."""
    parser = subparsers.add_parser(
        "conformance",
        help="check that a deployment keeps the public contract (pass/fail table)",
        description=DESCRIPTION,
    )
    configure_parser(parser)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The command's options (shared by ``openbank-mesh conformance`` and ``python -m``)."""
    parser.add_argument("--gateway", help=f"gateway HOST:PORT (default 127.0.0.1:{DEFAULT_PORTS['gateway']})")
    parser.add_argument("--client-id", help="the partner's OAuth client id")
    parser.add_argument("--client-secret", help="the partner's client secret")
    parser.add_argument("--customer-username", help="a test customer's username")
    parser.add_argument("--customer-password", help="the test customer's password")
    parser.add_argument("--customer-totp-secret", help="the test customer's TOTP seed (base32)")
    parser.add_argument(
        "--customer-account",
        help="the test customer's funded account, accounts/{id} (with --bank-web: the first one offered)",
    )
    parser.add_argument(
        "--bank-web", help="the bank's web app, e.g. https://bank.example (public mode: no internal endpoint)"
    )
    parser.add_argument("--redirect-uri", help="with --bank-web: one of the partner's registered redirect URIs")
    parser.add_argument(
        "--bank-web-ca", type=Path, help="CA certificate (PEM) for the bank's web app; the system's if unset"
    )
    parser.add_argument(
        "--bank-app-endpoint",
        help=f"where the bank app reaches identity, HOST:PORT (default 127.0.0.1:{DEFAULT_PORTS['identity']})",
    )
    parser.add_argument("--bank-app-client-id", help="the bank app's client id (scope consents:authorise)")
    parser.add_argument("--bank-app-client-secret", help="the bank app's client secret")
    parser.add_argument(
        "--tls-ca", type=Path, help="CA certificate (PEM) for TLS to both endpoints; plaintext if unset"
    )
    parser.add_argument(
        "--demo-data-dir",
        type=Path,
        help="take every credential not given from a local mesh's data directory (its demo data)",
    )
    parser.add_argument("--partner", default="acme", help="with --demo-data-dir: which demo partner (default acme)")
    parser.add_argument("--customer", default="alice", help="with --demo-data-dir: which demo customer (default alice)")
    parser.add_argument("--customer-ip", default=DEFAULT_CUSTOMER_IP, help="x-fapi-customer-ip-address to send")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per rpc (default 10)")


COMMON_SETTINGS = (
    "gateway",
    "client_id",
    "client_secret",
    "customer_username",
    "customer_password",
    "customer_totp_secret",
)
# Public mode (--bank-web): the bank's pages and a registered redirect URI, nothing internal.
PUBLIC_SETTINGS = (*COMMON_SETTINGS, "bank_web", "redirect_uri")
INTERNAL_SETTINGS = (
    *COMMON_SETTINGS,
    "customer_account",
    "bank_app_endpoint",
    "bank_app_client_id",
    "bank_app_client_secret",
)
REQUIRED_SETTINGS = INTERNAL_SETTINGS  # without --bank-web
OPTIONAL_SETTINGS = ("customer_account", "bank_web_ca")


def _demo_values(args: argparse.Namespace, public: bool) -> dict[str, Any]:
    demo_path = args.demo_data_dir / "demo-credentials.json"
    internal_path = args.demo_data_dir / "internal-clients.json"
    if not demo_path.exists() or (not public and not internal_path.exists()):
        raise SystemExit(f"{args.demo_data_dir}: no demo data (start the mesh with `openbank-mesh up` first)")
    demo = json.loads(demo_path.read_text())
    partner = demo["partners"][args.partner]
    customer = demo["customers"][args.customer]
    values = {
        "client_id": partner["client_id"],
        "client_secret": partner["client_secret"],
        "customer_username": customer["username"],
        "customer_password": customer["password"],
        "customer_totp_secret": customer["totp_secret"],
        "customer_account": customer["account"],
    }
    if partner.get("redirect_uris"):
        values["redirect_uri"] = partner["redirect_uris"][0]
    if not public:
        values["bank_app_client_secret"] = json.loads(internal_path.read_text())["bank-app"]
    return values


def config_from_args(args: argparse.Namespace) -> ConformanceConfig:
    """Merge explicit options with the demo data directory's credentials; explicit wins."""
    public = bool(getattr(args, "bank_web", None))
    required = PUBLIC_SETTINGS if public else INTERNAL_SETTINGS
    values: dict[str, Any] = {"gateway": f"127.0.0.1:{DEFAULT_PORTS['gateway']}"}
    if not public:
        values.update(bank_app_endpoint=f"127.0.0.1:{DEFAULT_PORTS['identity']}", bank_app_client_id="bank-app")
    if args.demo_data_dir is not None:
        values.update(_demo_values(args, public))
        if (args.demo_data_dir / MESH_FILE).exists():  # a mesh `up` started, maybe on other ports
            ports = mesh_ports(args.demo_data_dir)
            values["gateway"] = f"127.0.0.1:{ports['gateway']}"
            if not public:
                values["bank_app_endpoint"] = f"127.0.0.1:{ports['identity']}"
    for name in (*required, *OPTIONAL_SETTINGS):
        given = getattr(args, name, None)
        if given:
            values[name] = given
    missing = [f"--{name.replace('_', '-')}" for name in required if name not in values]
    if missing:
        raise SystemExit("conformance: missing " + ", ".join(missing) + " (or give --demo-data-dir)")
    return ConformanceConfig(**values, tls_ca=args.tls_ca, customer_ip=args.customer_ip, timeout=args.timeout)


async def run(args: argparse.Namespace) -> int:
    """Run every check against the deployment; print the table; 0 when all passed, else 1."""
    config = config_from_args(args)
    customer_side = f"bank pages {config.bank_web}" if config.bank_web else f"bank app {config.bank_app_endpoint}"
    print(
        f"conformance of {config.gateway} (partner {config.client_id}, customer {config.customer_username}, "
        f"{customer_side})\n"
    )
    conformance = ConformanceRun(config)
    try:
        results = await conformance.run()
    finally:
        await conformance.close()
    for line in format_table(results):
        print(line)
    return 0 if results and all(r.passed for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m meshcli.conformance``: the same command without the console script."""
    parser = argparse.ArgumentParser(prog="openbank-mesh conformance", description=DESCRIPTION)
    configure_parser(parser)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
