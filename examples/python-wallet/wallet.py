"""An example wallet built on the OpenBank partner SDK (and nothing of the mesh itself).

It asks a customer for a consent, lets them authorise it at their bank, shows their accounts
and balances, tops up the wallet from their account and watches the payment to its end.

Against any deployment (the customer authorises in the bank's app and hands back a code):

    python examples/python-wallet/wallet.py --gateway api.bank.example:443 --tls-ca ca.pem \\
        --client-id obc_... --client-secret ...

Against a local mesh (`make up`), authorising as the demo customer through the sandbox bank app:

    python examples/python-wallet/wallet.py --demo --demo-data-dir data
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

try:
    import openbank_sdk as ob
except ImportError:  # running from a source checkout: use the SDK next door
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk"))
    import openbank_sdk as ob
from openbank_sdk.sandbox import SandboxBankApp

from openbank.payment.v1 import payment_pb2

FINAL_STATES = {
    payment_pb2.PAYMENT_STATE_SETTLED,
    payment_pb2.PAYMENT_STATE_REJECTED,
    payment_pb2.PAYMENT_STATE_CANCELLED,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The wallet's options."""
    parser = argparse.ArgumentParser(description="Example wallet on the OpenBank partner SDK.")
    parser.add_argument(
        "--gateway",
        help="gateway HOST:PORT (default: the local mesh's, from --demo-data-dir's mesh.json, else 127.0.0.1:50050)",
    )
    parser.add_argument("--client-id", help="the wallet's OAuth client id")
    parser.add_argument("--client-secret", help="the wallet's client secret")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate (PEM); plaintext when unset")
    parser.add_argument("--client-cert", type=Path, help="client certificate (PEM) for mutual TLS")
    parser.add_argument("--client-key", type=Path, help="client private key (PEM) for mutual TLS")
    parser.add_argument("--amount", type=int, default=2_500, help="top-up amount in minor units (default 2500)")
    parser.add_argument("--currency", default="EUR", help="ISO 4217 currency of the top-up")
    parser.add_argument(
        "--authorise-url",
        default="https://bank.example/consents/authorise?consent={consent}",
        help="where the bank's app lets the customer authorise ({consent} is replaced)",
    )
    parser.add_argument("--code", help="the authorization code (asked for on stdin when missing)")
    parser.add_argument("--demo", action="store_true", help="authorise as a demo customer of a local mesh")
    parser.add_argument("--demo-data-dir", type=Path, default=Path("data"), help="the local mesh's data directory")
    parser.add_argument("--demo-partner", default="acme", help="which demo partner the wallet is")
    parser.add_argument("--demo-customer", default="alice", help="which demo customer authorises")
    parser.add_argument("--bank-app-endpoint", help="identity, for the sandbox bank app (default: as --gateway)")
    args = parser.parse_args(argv)
    local = local_mesh_addresses(args.demo_data_dir)
    args.gateway = args.gateway or local["gateway"]
    args.bank_app_endpoint = args.bank_app_endpoint or local["identity"]
    return args


def local_mesh_addresses(data_dir: Path) -> dict[str, str]:
    """Where a local mesh listens: `openbank-mesh up` records it in <data-dir>/mesh.json (also
    with --base-port); the default ports when the file is missing or unreadable."""
    try:
        recorded = json.loads((data_dir / "mesh.json").read_text())
        host, ports = recorded.get("host", "127.0.0.1"), recorded["ports"]
        return {name: f"{host}:{int(ports[name])}" for name in ("gateway", "identity")}
    except (OSError, ValueError, KeyError, TypeError):
        return {"gateway": "127.0.0.1:50050", "identity": "127.0.0.1:50051"}


def say(text: str) -> None:
    """One step of the story."""
    print(text, flush=True)


async def authorise_in_sandbox(args: argparse.Namespace, consent: str) -> str:
    """--demo: play the customer and the bank's app with the local mesh's demo credentials."""
    demo = json.loads((args.demo_data_dir / "demo-credentials.json").read_text())
    secrets = json.loads((args.demo_data_dir / "internal-clients.json").read_text())
    customer = demo["customers"][args.demo_customer]
    channel = ob.insecure_channel(args.bank_app_endpoint)
    try:
        bank_app = SandboxBankApp(channel, "bank-app", secrets["bank-app"])
        answer = await bank_app.authorise(
            consent,
            username=customer["username"],
            password=customer["password"],
            totp_secret=customer["totp_secret"],
            accounts=[customer["account"]],
        )
    finally:
        await channel.close()
    say(f"   {customer['username']} authorised it with password + one-time code in the bank's app")
    return answer.authorization_code


async def run(args: argparse.Namespace) -> int:
    """The wallet's journey; 0 when the top-up settled."""
    if args.demo:
        partner = json.loads((args.demo_data_dir / "demo-credentials.json").read_text())["partners"][args.demo_partner]
        args.client_id = args.client_id or partner["client_id"]
        args.client_secret = args.client_secret or partner["client_secret"]
    if not args.client_id or not args.client_secret:
        say("--client-id and --client-secret are required (or --demo)")
        return 2
    client = ob.OpenBankClient.connect(
        args.gateway,
        args.client_id,
        args.client_secret,
        insecure=args.tls_ca is None,
        ca_file=args.tls_ca,
        client_cert_file=args.client_cert,
        client_key_file=args.client_key,
        customer_ip_address="203.0.113.1",  # the customer is using the wallet right now
    )
    async with client:
        say("1. token: client credentials")
        await client.tokens.token()
        say("2. consent: accounts, balances and payments, 500.00 per payment")
        pending = await client.create_consent(
            [ob.READ_ACCOUNTS, ob.READ_BALANCES, ob.INITIATE_PAYMENTS],
            per_payment_limit=ob.money(50_000, args.currency),
        )
        say(f"   consent {pending.name}: send the customer to")
        say(f"   {args.authorise_url.format(consent=pending.name)}")
        if args.demo:
            code = await authorise_in_sandbox(args, pending.name)
        else:
            prompt = "   authorization code from the bank: "
            code = args.code or (await asyncio.to_thread(input, prompt)).strip()
        session = await client.exchange_code(code, pending.pkce.verifier)
        say(f"3. token bound to {session.consent} (refreshed automatically)")
        accounts = [account async for account in session.accounts()]
        for account in accounts:
            balance = await session.balance(account.name)
            say(
                f"   {account.display_name or account.name} {account.display_number}: available "
                f"{balance.available.minor_units / 100:.2f} {balance.available.currency_code}"
            )
        if not accounts:
            say("   the customer shared no account")
            return 1
        return await top_up(client, session, accounts[0].name, pending.consent.partner, args)


async def top_up(
    client: ob.OpenBankClient, session: ob.ConsentSession, account: str, wallet: str, args: argparse.Namespace
) -> int:
    """Watch the partner's payment events, top the wallet up, wait for the payment's end."""
    events: asyncio.Queue[payment_pb2.PaymentEvent] = asyncio.Queue()

    async def watch() -> None:
        async for event in client.watch_payments():
            await events.put(event)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.5)  # the stream starts "from now": let it open before paying
    try:
        say(f"4. top-up of {args.amount / 100:.2f} {args.currency} into the wallet {wallet}")
        payment = await session.create_payment(
            account,
            ob.money(args.amount, args.currency),
            creditor_wallet=wallet,
            remittance_information="wallet top-up",
        )
        say(f"   {payment.name}: {payment_pb2.PaymentState.Name(payment.state)} ({payment.iso20022_status})")
        state = payment.state
        while state not in FINAL_STATES:
            event = await asyncio.wait_for(events.get(), 30)
            if event.payment == payment.name:
                state = event.state
                say(f"   event {event.cursor}: {payment_pb2.PaymentState.Name(event.state)}")
        if state != payment_pb2.PAYMENT_STATE_SETTLED:
            final = await session.get_payment(payment.name)
            say(f"   not settled: {final.status_reason} {final.status_reason_message}")
            return 1
        balance = await session.balance(account)
        say(f"5. settled; available now {balance.available.minor_units / 100:.2f} {balance.available.currency_code}")
        return 0
    except ob.OpenBankError as error:
        say(f"   refused: {error.code.name} {error.reason}: {error.message}")
        return 1
    finally:
        watcher.cancel()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
