"""Account opening through a wallet (issue 28 item 1), end to end through the gateway over real
processes, one mesh for the module:

- approved: the customer, its account and the wallet's consent exist; the customer activates
  on the bank's one-time page (its authenticator shown once), authorises the consent, and the
  wallet reads the new account through the gateway;
- referred (a document the bank reviews) and approved by an operator, who is recorded, or
  declined by one; the SDK awaiting the decision on the wallet's event log;
- declined: a sanctions match, an applicant under age, the same person twice;
- fair data use (item 3): the onboarding token follows the application, the customer's data
  and account open only under the consent the customer authorised, within its permissions;
- identity crashing at each new step (decision, account opening, activation): nothing lost,
  nothing twice;
- the ledger sums to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import grpc
import openbank_sdk as ob
import pytest
import pytest_asyncio

from meshcli.demo import exchange_code
from meshcli.mesh import PROCESSES
from meshlib import totp
from meshlib.grpc_errors import decode_rpc_error
from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc, account_pb2, account_pb2_grpc
from openbank.identity.v1 import (
    consent_pb2,
    consent_pb2_grpc,
    onboarding_pb2,
    token_pb2,
    token_pb2_grpc,
)
from tests.e2e.onboarding_harness import (
    ACCOUNT_OPEN,
    READ_ACCOUNTS,
    Bank,
    account_open,
    activate,
    application,
    application_states,
    bank_view,
    cli,
    holds_nothing_of_the_customer,
    sent_code,
    wallet_view,
)
from tests.e2e.payment_harness import running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bank(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bank]:
    async with running_mesh(tmp_path_factory, "onboarding", (*dict(PROCESSES), "bankweb")) as running:
        partner = running.demo["partners"]["acme"]
        token = await token_pb2_grpc.TokenServiceStub(running.gateway).IssueToken(
            token_pb2.IssueTokenRequest(
                grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
                client_id=partner["client_id"],
                client_secret=partner["client_secret"],
                scopes=["customers:onboard"],
            ),
            timeout=10,
        )
        metadata = (("authorization", f"Bearer {token.access_token}"),)
        yield Bank(running.mesh, running.operator, partner, running.gateway, metadata)


async def test_an_approved_application_opens_an_account_the_customer_activates_and_shares(bank: Bank) -> None:
    request, verifier = application("Jana", "Nováková", "1990-04-12")
    submitted = await bank.onboarding.SubmitApplication(request, metadata=bank.wallet_metadata, timeout=20)
    assert submitted.application.reason == onboarding_pb2.APPLICATION_REASON_CHECKS_PASSED
    assert submitted.application.consent and holds_nothing_of_the_customer(submitted.application)
    replay = await bank.onboarding.SubmitApplication(request, metadata=bank.wallet_metadata, timeout=20)
    assert replay.application.name == submitted.application.name

    app = await account_open(bank, submitted.application.name)
    assert app.state == ACCOUNT_OPEN and app.activation_uri and holds_nothing_of_the_customer(app)
    opened = await bank_view(bank, app.name)
    assert opened.account and opened.customer and opened.applicant.family_name == "Nováková"
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await bank.identity.ActivateCustomer(
            onboarding_pb2.ActivateCustomerRequest(
                request_id=uuid.uuid4().hex,
                application=app.name,
                activation_code="not-the-code",
                password="a long password of mine",
            ),
            metadata=await bank.operator.bank_app_metadata(),
            timeout=10,
        )
    assert decode_rpc_error(wrong.value).reason == "ACTIVATION_CODE_INVALID"
    # The wallet holds the link, not the code the bank sent the customer: with the link alone
    # the page sets no password and shows no authenticator secret; the wrong entry is counted.
    code = sent_code(bank, app.name)
    assert code not in str(app) and code not in str(submitted.application)
    guessed = await activate(bank, app, "the wallet's own password", code="00000000" if code != "00000000" else "1" * 8)
    assert guessed.status == 400 and not guessed.totp_secret
    activation = await activate(bank, app, "a long password of hers")
    assert activation.status == 200 and activation.otpauth_uri.startswith("otpauth://totp/")
    # The page's link works once.
    assert (await activate(bank, app, "another long password")).status == 403
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await bank.identity.ActivateCustomer(
            onboarding_pb2.ActivateCustomerRequest(
                request_id=uuid.uuid4().hex,
                application=app.name,
                activation_code=parse_qs(urlparse(app.activation_uri).query)["code"][0],
                password="another long password",
            ),
            metadata=await bank.operator.bank_app_metadata(),
            timeout=10,
        )
    assert decode_rpc_error(again.value).reason == "ACTIVATION_CODE_INVALID"
    after = await bank.onboarding.GetApplication(
        onboarding_pb2.GetApplicationRequest(name=app.name), metadata=bank.wallet_metadata, timeout=10
    )
    assert after.application.state == onboarding_pb2.APPLICATION_STATE_ACTIVE and not after.application.activation_uri
    assert holds_nothing_of_the_customer(after.application)

    # The wallet was told each step in its event log.
    assert await application_states(bank, app.name) == [
        "APPLICATION_STATE_APPROVED",
        "APPLICATION_STATE_ACCOUNT_OPEN",
        "APPLICATION_STATE_ACTIVE",
    ]

    # The customer authorises the wallet's consent with its new credentials; the wallet reads.
    seed = totp.from_base32(activation.totp_secret)
    authorised = await consent_pb2_grpc.ConsentServiceStub(bank.operator.channel("identity")).AuthoriseConsent(
        consent_pb2.AuthoriseConsentRequest(
            request_id=uuid.uuid4().hex,
            name=app.consent,
            username=activation.username,
            password="a long password of hers",
            one_time_code=totp.hotp(seed, totp.time_step(time.time())),
            accounts=[opened.account],
        ),
        metadata=await bank.operator.bank_app_metadata(),
        timeout=10,
    )
    bound = await exchange_code(
        token_pb2_grpc.TokenServiceStub(bank.gateway), bank.partner, authorised.authorization_code, verifier
    )
    accounts = await account_pb2_grpc.AccountServiceStub(bank.gateway).ListAccounts(
        account_pb2.ListAccountsRequest(), metadata=(("authorization", f"Bearer {bound.access_token}"),), timeout=10
    )
    assert [a.name for a in accounts.accounts] == [opened.account]
    # Under the authorised consent the wallet sees what it opened, for whom, and its balance
    # (the consent grants READ_BALANCES; the onboarding token reads none).
    shared = await wallet_view(bank, app.name)
    assert shared.account == opened.account and shared.applicant.family_name == "Nováková"
    balance = await account_pb2_grpc.AccountServiceStub(bank.gateway).GetBalance(
        account_pb2.GetBalanceRequest(account=opened.account),
        metadata=(("authorization", f"Bearer {bound.access_token}"),),
        timeout=10,
    )
    assert balance.balance.account == opened.account and balance.balance.available.minor_units == 0

    # The same person applying again is a duplicate, even spelled otherwise.
    twice, _ = application("JANA", "Novakova", "1990-04-12")
    declined = await bank.onboarding.SubmitApplication(twice, metadata=bank.wallet_metadata, timeout=20)
    assert declined.application.state == onboarding_pb2.APPLICATION_STATE_DECLINED
    assert declined.application.reason == onboarding_pb2.APPLICATION_REASON_DUPLICATE_CUSTOMER
    assert not declined.application.customer


async def test_the_wallet_reads_only_what_the_customers_consent_for_the_product_allows(bank: Bank) -> None:
    """Fair data use (item 3): the onboarding scope follows the application, nothing more; the
    customer's data and account open to the wallet under the consent the customer authorised,
    within its permissions, and close again when the customer pauses it."""
    request, verifier = application("Lena", "Fairuse", "1988-03-03", permissions=(READ_ACCOUNTS,))
    submitted = await bank.onboarding.SubmitApplication(request, metadata=bank.wallet_metadata, timeout=20)
    app = await account_open(bank, submitted.application.name)
    opened = await bank_view(bank, app.name)
    assert app.state == ACCOUNT_OPEN and holds_nothing_of_the_customer(app) and opened.account
    accounts = account_pb2_grpc.AccountServiceStub(bank.gateway)
    with pytest.raises(grpc.aio.AioRpcError) as no_consent:
        await accounts.GetBalance(
            account_pb2.GetBalanceRequest(account=opened.account), metadata=bank.wallet_metadata, timeout=10
        )
    assert no_consent.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)

    activation = await activate(bank, app, "her own long password")
    assert activation.status == 200
    bank_app = await bank.operator.bank_app_metadata()
    consents = consent_pb2_grpc.ConsentServiceStub(bank.operator.channel("identity"))
    authorised = await consents.AuthoriseConsent(
        consent_pb2.AuthoriseConsentRequest(
            request_id=uuid.uuid4().hex,
            name=app.consent,
            username=activation.username,
            password="her own long password",
            one_time_code=totp.hotp(totp.from_base32(activation.totp_secret), totp.time_step(time.time())),
            accounts=[opened.account],
        ),
        metadata=bank_app,
        timeout=10,
    )
    bound = await exchange_code(
        token_pb2_grpc.TokenServiceStub(bank.gateway), bank.partner, authorised.authorization_code, verifier
    )
    shared = await wallet_view(bank, app.name)
    assert shared.account == opened.account and shared.customer == opened.customer
    assert shared.applicant.given_name == "Lena"
    consent_bound = (("authorization", f"Bearer {bound.access_token}"),)
    found = await accounts.GetAccount(
        account_pb2.GetAccountRequest(name=opened.account), metadata=consent_bound, timeout=10
    )
    assert found.account.name == opened.account
    # The customer shared its accounts, not its balance.
    with pytest.raises(grpc.aio.AioRpcError) as no_permission:
        await accounts.GetBalance(
            account_pb2.GetBalanceRequest(account=opened.account), metadata=consent_bound, timeout=10
        )
    assert no_permission.value.code() == grpc.StatusCode.PERMISSION_DENIED

    await consents.PauseConsent(
        consent_pb2.PauseConsentRequest(request_id=uuid.uuid4().hex, name=app.consent, customer=opened.customer),
        metadata=bank_app,
        timeout=10,
    )
    paused = await wallet_view(bank, app.name)
    assert paused.state == onboarding_pb2.APPLICATION_STATE_ACTIVE and holds_nothing_of_the_customer(paused)


async def test_five_wrong_customer_codes_lock_activation_until_an_operator_sends_a_new_code(bank: Bank) -> None:
    request, _ = application("Lena", "Sperrmann", "1987-02-03")
    submitted = await bank.onboarding.SubmitApplication(request, metadata=bank.wallet_metadata, timeout=20)
    app = await account_open(bank, submitted.application.name)
    assert app.state == ACCOUNT_OPEN
    first = sent_code(bank, app.name)
    wrong = "00000000" if first != "00000000" else "11111111"
    assert [(await activate(bank, app, "a long password of hers", wrong)).status for _ in range(5)] == [400] * 4 + [403]
    assert (await activate(bank, app, "a long password of hers", first)).status == 403  # locked: even the right one
    code, out = await cli(bank, "resend-code", app.name)
    assert code == 0 and first not in out and sent_code(bank, app.name) not in out, out
    assert sent_code(bank, app.name) != first
    activated = await activate(bank, app, "a long password of hers")
    assert activated.status == 200 and activated.totp_secret
    assert (await wallet_view(bank, app.name)).state == onboarding_pb2.APPLICATION_STATE_ACTIVE


async def test_a_referred_application_waits_for_an_operator_who_approves_it(bank: Bank) -> None:
    request, _ = application("Piet", "Jansen", "1985-09-30", document="DRIVING_LICENCE")
    submitted = await bank.onboarding.SubmitApplication(request, metadata=bank.wallet_metadata, timeout=20)
    assert submitted.application.state == onboarding_pb2.APPLICATION_STATE_REFERRED
    assert submitted.application.reason == onboarding_pb2.APPLICATION_REASON_DOCUMENT_NEEDS_REVIEW
    assert not submitted.application.customer and not submitted.application.activation_uri

    # The operator finds it in the queue and approves it with the CLI.
    code, out = await cli(bank, "list", "--state", "referred")
    assert code == 0 and submitted.application.name in out, out
    code, out = await cli(bank, "approve", submitted.application.name)
    assert code == 0, out
    decided = json.loads(out)
    assert decided["reason"] == "APPLICATION_REASON_OPERATOR_APPROVED"
    assert decided["decided_by"].startswith("service:"), decided
    app = await account_open(bank, submitted.application.name)
    assert app.state == ACCOUNT_OPEN and app.activation_uri and holds_nothing_of_the_customer(app)
    assert not app.decided_by  # the operator's identity is the bank's, not the partner's
    opened = await bank_view(bank, app.name)
    assert opened.account and opened.customer and opened.decided_by.startswith("service:")

    # Deciding again is refused (the decision is the operator's once).
    code, out = await cli(bank, "decline", app.name)
    assert code == 1 and "INVALID_STATE_TRANSITION" in out, out


@pytest.mark.parametrize(
    ("given", "family", "born", "reason"),
    [
        ("Ivan", "SANCTIONED", "1970-01-01", onboarding_pb2.APPLICATION_REASON_SANCTIONS_MATCH),
        (
            "Young",
            "Applicant",
            f"{dt.date.today().year - 17}-01-01",
            onboarding_pb2.APPLICATION_REASON_UNDER_MINIMUM_AGE,
        ),
    ],
)
async def test_declined_applications_create_nothing(
    bank: Bank, given: str, family: str, born: str, reason: int
) -> None:
    request, _ = application(given, family, born)
    answer = await bank.onboarding.SubmitApplication(request, metadata=bank.wallet_metadata, timeout=20)
    assert answer.application.state == onboarding_pb2.APPLICATION_STATE_DECLINED
    assert answer.application.reason == reason
    assert not (answer.application.customer or answer.application.consent or answer.application.activation_uri)


async def test_the_sdk_submits_and_follows_an_application_and_the_ledger_sums_to_zero(bank: Bank) -> None:
    request, _ = application("Ivana", "Watched", "1992-02-02")
    async with ob.OpenBankClient.connect(
        f"127.0.0.1:{bank.mesh.ports['gateway']}",
        bank.partner["client_id"],
        bank.partner["client_secret"],
        insecure=True,
    ) as client:
        submitted = await client.submit_application(
            request.applicant,
            request.evidence,
            terms_version="2026-01",
            terms_accepted=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
        )
        assert submitted.application.reason == onboarding_pb2.APPLICATION_REASON_WATCHLIST_POSSIBLE_MATCH
        assert (await client.wait_for_account(submitted.application.name, timeout=1)).state == (
            onboarding_pb2.APPLICATION_STATE_REFERRED
        )
        # The wallet awaits the bank's decision on its event log while an operator approves;
        # the long recheck leaves the event to wake it.
        waiting = asyncio.create_task(client.await_decision(submitted.application.name, timeout=60, recheck=50))
        await asyncio.sleep(2)  # its stream is open
        assert not waiting.done()
        started = time.monotonic()
        await bank.identity.DecideApplication(
            onboarding_pb2.DecideApplicationRequest(
                request_id=uuid.uuid4().hex, name=submitted.application.name, approve=True
            ),
            metadata=await bank.operator.metadata(),
            timeout=20,
        )
        decided = await asyncio.wait_for(waiting, 60)
        assert decided.state == ACCOUNT_OPEN and decided.activation_uri
        assert decided.reason == onboarding_pb2.APPLICATION_REASON_OPERATOR_APPROVED
        assert time.monotonic() - started < 30  # told by the event, not by the recheck
    totals = await account_admin_pb2_grpc.AccountAdminServiceStub(bank.operator.channel("account")).GetLedgerTotals(
        account_admin_pb2.GetLedgerTotalsRequest(), metadata=await bank.operator.metadata(), timeout=10
    )
    assert totals.totals and all(t.balanced and t.net.minor_units == 0 for t in totals.totals)


async def test_an_account_the_bank_could_not_open_is_opened_once_it_can(bank: Bank) -> None:
    """The account service crashed: the approval stands (customer, consent) and the account is
    opened by identity's retry once the account service is back, exactly one."""
    account = bank.mesh.replica("account")
    bank.mesh.kill(account)
    try:
        request, _ = application("Crash", "Tester", "1980-06-15")
        submitted = await bank.onboarding.SubmitApplication(request, metadata=bank.wallet_metadata, timeout=30)
        assert submitted.application.state == onboarding_pb2.APPLICATION_STATE_APPROVED
        assert submitted.application.consent
        approved = await bank_view(bank, submitted.application.name)
        assert approved.customer and not approved.account
    finally:
        await bank.mesh.restart(account)
    assert (await account_open(bank, submitted.application.name, timeout=90)).state == ACCOUNT_OPEN
    app = await bank_view(bank, submitted.application.name)
    assert app.account
    search = await account_admin_pb2_grpc.AccountAdminServiceStub(bank.operator.channel("account")).SearchAccounts(
        account_admin_pb2.SearchAccountsRequest(customer=app.customer),
        metadata=await bank.operator.metadata(),
        timeout=10,
    )
    assert [a.account.name for a in search.accounts] == [app.account]


async def test_a_referred_application_an_operator_declines_creates_nothing(bank: Bank) -> None:
    request, _ = application("Karel", "Novotny", "1975-11-02", document="DRIVING_LICENCE")
    submitted = await bank.onboarding.SubmitApplication(request, metadata=bank.wallet_metadata, timeout=20)
    assert submitted.application.state == onboarding_pb2.APPLICATION_STATE_REFERRED
    code, out = await cli(bank, "decline", submitted.application.name)
    assert code == 0 and json.loads(out)["reason"] == "APPLICATION_REASON_OPERATOR_DECLINED", out
    seen = await wallet_view(bank, submitted.application.name)
    assert seen.state == onboarding_pb2.APPLICATION_STATE_DECLINED
    assert seen.reason == onboarding_pb2.APPLICATION_REASON_OPERATOR_DECLINED
    assert not (seen.consent or seen.activation_uri) and holds_nothing_of_the_customer(seen)
    assert not (await bank_view(bank, seen.name)).customer
    assert await application_states(bank, seen.name) == ["APPLICATION_STATE_REFERRED", "APPLICATION_STATE_DECLINED"]


async def _until_answered(call: Any, timeout: float = 60) -> Any:
    """``call()`` again while the gateway still holds the restarted identity as not answering
    (UNAVAILABLE, as designed, with RetryInfo); the calls retried carry the same request_id."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_identity_crashing_at_each_step_of_account_opening_loses_nothing_and_doubles_nothing(
    bank: Bank,
) -> None:
    """identity exits abruptly right after the decision commits, then (its retry job opening the
    account) right after the account opened and before it is recorded, then inside the
    activation before it commits; each time identity's own retry or the wallet's (same
    request_id) finishes it: one application, one customer, one account, and the activation
    link works once, after the crash."""
    identity = bank.mesh.replica("identity")
    timings: list[tuple[str, float]] = []

    async def restart(failpoint: str | None) -> None:
        began = time.monotonic()
        identity.launch_env.pop("OBM_ONBOARDING_FAILPOINT", None)
        if failpoint:
            identity.launch_env["OBM_ONBOARDING_FAILPOINT"] = failpoint
        if identity.process is not None and identity.process.returncode is None:
            bank.mesh.kill(identity)
        await bank.mesh.restart(identity)
        timings.append((f"restart {failpoint}", time.monotonic() - began))

    async def crash_on_start(point: str) -> None:
        """Start identity armed at ``point``, which its own retry job reaches at once, perhaps
        before it serves: wait for the exit, not for readiness."""
        identity.launch_env["OBM_ONBOARDING_FAILPOINT"] = point
        old = identity.process
        starting = asyncio.create_task(bank.mesh.restart(identity))
        for _ in range(200):  # the new process within 10 s
            if identity.process is not old:
                break
            await asyncio.sleep(0.05)
        await crashed(point)
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            await starting

    async def crashed(point: str) -> None:
        began = time.monotonic()
        assert await asyncio.wait_for(identity.process.wait(), 60) == 137, point  # type: ignore[union-attr]
        timings.append((f"crash {point}", time.monotonic() - began))

    async def submit(request: onboarding_pb2.SubmitApplicationRequest) -> onboarding_pb2.Application:
        answer = await _until_answered(
            lambda: bank.onboarding.SubmitApplication(request, metadata=bank.wallet_metadata, timeout=20)
        )
        return answer.application

    request, _ = application("Crash", "Tester", "1979-01-01")
    try:
        await restart("after_decision_commit")
        with pytest.raises(grpc.aio.AioRpcError):
            await bank.onboarding.SubmitApplication(request, metadata=bank.wallet_metadata, timeout=20)
        await crashed("after_decision_commit")
        # Restarted, identity's retry job opens the approved application's account and exits
        # before recording it.
        await crash_on_start("after_account_opened")
        # Restarted again, it opens it again (the same request_id: the same account) and records it.
        await restart("before_activation_commit")
        # The wallet retries with the same request_id: the decision made before the crashes.
        replayed = await submit(request)
        assert replayed.reason == onboarding_pb2.APPLICATION_REASON_CHECKS_PASSED
        app = await account_open(bank, replayed.name, timeout=60)
        assert app.state == ACCOUNT_OPEN
        assert (await activate(bank, app, "a password through a crash")).status == 503  # "send it again"
        await crashed("before_activation_commit")
    finally:
        await restart(None)
    opened = await bank_view(bank, app.name)
    search = await account_admin_pb2_grpc.AccountAdminServiceStub(bank.operator.channel("account")).SearchAccounts(
        account_admin_pb2.SearchAccountsRequest(customer=opened.customer),
        metadata=await bank.operator.metadata(),
        timeout=10,
    )
    assert [a.account.name for a in search.accounts] == [opened.account]
    # Nothing of the cut-short activation stands: the same link activates, once.
    activated = await activate(bank, app, "a password through a crash")
    assert activated.status == 200 and activated.username, timings
    assert (await activate(bank, app, "another password after it")).status == 403
    assert (await submit(request)).name == app.name
    assert await application_states(bank, app.name) == [
        "APPLICATION_STATE_APPROVED",
        "APPLICATION_STATE_ACCOUNT_OPEN",
        "APPLICATION_STATE_ACTIVE",
    ]
    totals = await account_admin_pb2_grpc.AccountAdminServiceStub(bank.operator.channel("account")).GetLedgerTotals(
        account_admin_pb2.GetLedgerTotalsRequest(), metadata=await bank.operator.metadata(), timeout=10
    )
    assert all(t.balanced and t.net.minor_units == 0 for t in totals.totals)
