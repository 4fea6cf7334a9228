"""Sandbox helper: play a test customer on the bank's own web pages with plain HTTP form posts,
the way a partner's automated tests reach a sandbox with nothing but its public addresses.

:class:`SandboxBankPages` signs the customer in (password + the current one-time code of their
published TOTP secret), approves or refuses a redirect-flow authorisation and reads where the
browser would go next (never following it off the bank's site), and approves or refuses a
decoupled (CIBA) authorisation on the approvals page. It needs only the standard library.

    pages = SandboxBankPages("http://127.0.0.1:8080")
    pushed = await client.push_authorization_request(pending, "http://127.0.0.1:8765/callback")
    back = await pages.authorise(pushed.url(pages.base_url), username="alice",
                                 password="demo-password-1", totp_secret="ALICE...")
    session = await client.exchange_code(back.query["code"], pending.pkce.verifier)
"""

from __future__ import annotations

import asyncio
import html
import http.cookiejar
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openbank_sdk.sandbox import authenticator

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_ACCOUNT = re.compile(r'name="accounts" value="([^"]+)"')
_APPROVAL = re.compile(
    r'<section class="card" id="approval-([0-9a-f]{32})">.*?<strong class="binding"[^>]*>(.*?)</strong>', re.S
)


class BankPageError(Exception):
    """The bank's pages did not answer as a customer's browser would expect."""

    def __init__(self, message: str, status: int = 0, page: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.page = page


@dataclass(frozen=True)
class Redirect:
    """Where the bank sent the browser back: the full location and its query."""

    location: str
    query: dict[str, str]
    accounts: tuple[str, ...] = ()


@dataclass
class _Answer:
    status: int
    location: str
    body: str


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the caller reads Location itself


@dataclass
class SandboxBankPages:
    """One customer's browser on the bank's web app (cookies kept between calls)."""

    base_url: str
    ca_file: str | Path | None = None
    timeout: float = 10.0
    _jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar, repr=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self._jar),
            urllib.request.HTTPSHandler(context=context),
            _KeepRedirects(),
        )

    # ---- HTTP -----------------------------------------------------------------------------

    def _send(self, url: str, form: Sequence[tuple[str, str]] | None) -> _Answer:
        data = urllib.parse.urlencode(list(form)).encode() if form is not None else None
        request = urllib.request.Request(url, data=data, method="POST" if form is not None else "GET")  # noqa: S310
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return _Answer(response.status, response.headers.get("Location", ""), response.read().decode())
        except urllib.error.HTTPError as answer:
            return _Answer(answer.code, answer.headers.get("Location", ""), answer.read().decode())

    async def _call(self, path_or_url: str, form: Sequence[tuple[str, str]] | None = None) -> _Answer:
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        return await asyncio.to_thread(self._send, url, form)

    def _on_site(self, location: str) -> bool:
        return location.startswith("/") and not location.startswith("//")

    async def _follow(self, answer: _Answer) -> _Answer:
        """Follow redirects within the bank's site (at most five)."""
        for _ in range(5):
            if answer.status not in (301, 302, 303, 307) or not self._on_site(answer.location):
                return answer
            answer = await self._call(answer.location)
        return answer

    @staticmethod
    def _csrf(answer: _Answer) -> str:
        found = _CSRF.search(answer.body)
        if not found:
            raise BankPageError("no form on the page", answer.status, answer.body[:500])
        return html.unescape(found.group(1))

    # ---- signing in -----------------------------------------------------------------------

    async def _sign_in(
        self, form_page: _Answer, action: str, username: str, password: str, totp_secret: str, extra: dict[str, str]
    ) -> _Answer:
        """Post the sign-in form; one more try with a later code if this one was taken."""
        for attempt in range(2):
            code = await authenticator(totp_secret).next_code()
            fields = {"username": username, "password": password, "one_time_code": code, **extra}
            answer = await self._call(action, [("csrf_token", self._csrf(form_page)), *fields.items()])
            if answer.status == 303:
                return answer
            if attempt == 0 and answer.status == 401:  # another process of the sandbox used this step
                form_page = answer
                continue
            raise BankPageError(f"sign-in refused (HTTP {answer.status})", answer.status, answer.body[:500])
        raise AssertionError("unreachable")

    # ---- the redirect flow ----------------------------------------------------------------

    async def authorise(
        self,
        authorization_url: str,
        *,
        username: str,
        password: str,
        totp_secret: str,
        accounts: Sequence[str] = (),
        approve: bool = True,
    ) -> Redirect:
        """Open the wallet's authorisation link, sign in, approve (``accounts``, or the first one
        offered) or refuse; where the bank sends the browser back (not followed)."""
        opened = await self._follow(await self._call(authorization_url))
        if opened.status != 200 or "/authorize/sign-in" not in opened.body:
            raise BankPageError(f"the authorisation link did not open (HTTP {opened.status})", opened.status)
        signed_in = await self._sign_in(opened, "/authorize/sign-in", username, password, totp_secret, {})
        consent_page = await self._follow(signed_in)
        offered = tuple(html.unescape(a) for a in _ACCOUNT.findall(consent_page.body))
        chosen = tuple(accounts) or offered[:1]
        form = [("csrf_token", self._csrf(consent_page)), ("decision", "approve" if approve else "refuse")]
        form += [("accounts", account) for account in (chosen if approve else ())]
        decided = await self._call("/authorize/consent", form)
        if decided.status != 303 or self._on_site(decided.location):
            raise BankPageError(f"the decision was not accepted (HTTP {decided.status})", decided.status)
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(decided.location).query))
        return Redirect(decided.location, query, chosen if approve else ())

    async def open_again(self, authorization_url: str) -> int:
        """Open an authorisation link once more (a replay): the HTTP status the bank answers."""
        return (await self._call(authorization_url)).status

    # ---- the decoupled flow ---------------------------------------------------------------

    async def decide_decoupled(
        self,
        *,
        username: str,
        password: str,
        totp_secret: str,
        binding_message: str,
        accounts: Sequence[str] = (),
        approve: bool = True,
    ) -> tuple[str, ...]:
        """Sign in, find the request showing ``binding_message`` on the approvals page, approve
        it (``accounts``, or the first one offered) or refuse it; the accounts shared."""
        form_page = await self._follow(await self._call("/sign-in?next=approvals"))
        if 'action="/sign-in"' in form_page.body:  # not signed in (recently enough): the form
            signed_in = await self._sign_in(
                form_page, "/sign-in", username, password, totp_secret, {"next": "approvals"}
            )
            page = await self._follow(signed_in)
        else:
            page = form_page
        matching = [found for found, shown in _APPROVAL.findall(page.body) if html.unescape(shown) == binding_message]
        if not matching:
            raise BankPageError(f"no request showing {binding_message!r} on the approvals page", page.status)
        approval_id = matching[0]
        offered = tuple(html.unescape(a) for a in _ACCOUNT.findall(page.body))
        chosen = tuple(accounts) or offered[:1]
        form = [("csrf_token", self._csrf(page)), ("decision", "approve" if approve else "refuse")]
        form += [("accounts", account) for account in (chosen if approve else ())]
        decided = await self._call(f"/approvals/{approval_id}", form)
        if decided.status != 303:
            raise BankPageError(f"the decision was not accepted (HTTP {decided.status})", decided.status)
        return chosen if approve else ()
