"""The conformance checks of the customer's side: the redirect flow through the bank's public
pages and the decoupled (CIBA) flow.

With only public endpoints (``--bank-web``: the bank's web app, no internal endpoint, no bank
credentials) the run plays the test customer on the bank's pages with plain HTTP form posts
(:class:`openbank_sdk.bank_pages.SandboxBankPages`): PAR, sign-in, consent, the redirect back
to the wallet, the code exchange; the decoupled flow's approvals page and the token poll.
With the bank app's internal endpoint instead (the older mode) the consent is authorised by its
rpc, and the decoupled flow is checked as far as a wallet sees it alone (started, pending).

A mixin of :class:`meshcli.conformance_checks.ConformanceRun`.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import grpc
from openbank_sdk.bank_pages import SandboxBankPages

from meshcli.conformance_support import CheckFailed, _expect, expect_error, ob
from openbank.identity.v1 import consent_pb2

if TYPE_CHECKING:
    from meshcli.conformance_checks import ConformanceConfig

UNREGISTERED_REDIRECT_URI = "https://conformance.invalid/not-registered"


class RedirectChecks:
    """Checks of AuthorizationService and the bank's pages (the run provides the attributes below)."""

    config: ConformanceConfig
    client: ob.OpenBankClient
    pending: ob.PendingConsent | None
    session: ob.ConsentSession | None
    pages: SandboxBankPages | None
    bank_app: Any
    used_authorization_url: str

    def _customer(self) -> dict[str, Any]:
        return {
            "username": self.config.customer_username,
            "password": self.config.customer_password,
            "totp_secret": self.config.customer_totp_secret,
        }

    async def authorise_through_pages(self, pending: ob.PendingConsent) -> str:
        """The redirect flow as a customer's browser does it; the code (checks state and iss)."""
        assert self.pages is not None
        pushed = await self.client.push_authorization_request(pending, self.config.redirect_uri)
        url = pushed.url(self.config.bank_web)
        accounts = [self.config.customer_account] if self.config.customer_account else []
        back = await self.pages.authorise(url, accounts=accounts, **self._customer())
        self.used_authorization_url = url
        _expect(back.location.startswith(self.config.redirect_uri), "the bank sent the browser elsewhere")
        _expect(back.query.get("state") == pushed.state, "state is not the one pushed")
        _expect(bool(back.query.get("iss")), "no iss (RFC 9207)")
        _expect(bool(back.query.get("code")), f"no code: {back.query.get('error', '')}")
        if not self.config.customer_account and back.accounts:
            self.config.customer_account = back.accounts[0]
        return back.query["code"]

    async def authorise_consent(self, pending: ob.PendingConsent) -> str:
        """An authorization code for ``pending``: through the bank's pages, or the bank app's rpc."""
        if self.pages is not None:
            return await self.authorise_through_pages(pending)
        answer = await self.bank_app.authorise(
            pending.name, accounts=[self.config.customer_account], **self._customer()
        )
        return str(answer.authorization_code)

    async def redirect_unregistered_uri(self) -> str:
        pending = await self.client.create_consent([ob.READ_ACCOUNTS])
        return await expect_error(
            self.client.push_authorization_request(pending, UNREGISTERED_REDIRECT_URI),
            grpc.StatusCode.INVALID_ARGUMENT,
            "REDIRECT_URI_NOT_REGISTERED",
        )

    async def redirect_link_used_once(self) -> str:
        _expect(self.pages is not None and bool(self.used_authorization_url), "no link was opened")
        assert self.pages is not None
        status = await self.pages.open_again(self.used_authorization_url)
        _expect(status == 400, f"opening the used link again answered HTTP {status}")
        return "HTTP 400, no redirect"

    async def redirect_refusal(self) -> str:
        assert self.pages is not None
        pending = await self.client.create_consent([ob.READ_ACCOUNTS])
        pushed = await self.client.push_authorization_request(pending, self.config.redirect_uri)
        back = await self.pages.authorise(pushed.url(self.config.bank_web), approve=False, **self._customer())
        _expect(back.query.get("error") == "access_denied", f"error {back.query.get('error')!r}")
        _expect(back.query.get("state") == pushed.state and "code" not in back.query, "state or a code")
        consent = await self.client.get_consent(pending.name)
        _expect(consent.state == consent_pb2.CONSENT_STATE_REJECTED, f"consent state {consent.state}")
        return "access_denied, consent REJECTED"

    async def decoupled_flow(self) -> str:
        pending = await self.client.create_consent([ob.READ_ACCOUNTS, ob.READ_BALANCES])
        binding = f"Conformance {secrets.token_hex(2).upper()}"
        started = await self.client.start_decoupled_authorization(pending, self.config.customer_username, binding)
        _expect(started.interval > 0 and started.expires_in > 0, "no interval or lifetime")
        try:
            await self.client.poll_decoupled_authorization(started)
            raise CheckFailed("tokens before the customer decided")
        except ob.FailedPrecondition as error:
            _expect(error.reason == "AUTHORIZATION_PENDING", f"first poll {error.reason}")
            _expect(error.retry_after is not None, "AUTHORIZATION_PENDING without RetryInfo")
        if self.pages is None:
            await self.client.revoke_consent(pending.name)  # nobody will approve it here
            return "started; AUTHORIZATION_PENDING with the interval (approval needs --bank-web)"
        accounts = [self.config.customer_account] if self.config.customer_account else []
        await self.pages.decide_decoupled(binding_message=binding, accounts=accounts, **self._customer())
        session = await self.client.poll_decoupled_authorization(started)
        _expect(session.consent == pending.name, f"token bound to {session.consent!r}")
        shared = [account.name async for account in session.accounts()]
        _expect(len(shared) == 1, f"the consent covers {shared}")
        return f"approved on the approvals page; token bound to {pending.name}"
