"""Sandbox helpers: play the customer's side of the consent flow against a test deployment.

In production the customer authorises a consent in the bank's own app; a partner never sees
the password or the one-time code. In a sandbox (the local mesh's demo data, a conformance
run) the test customer's credentials and authenticator seed are known, so
:class:`SandboxBankApp` can call the bank app's ``ConsentService.AuthoriseConsent`` (internal,
scope ``consents:authorise``) directly with the bank app's own client credentials.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import struct
import time
import uuid
from collections.abc import Callable, Sequence

import grpc

from openbank.identity.v1 import consent_pb2, consent_pb2_grpc
from openbank_sdk.auth import ClientCredentials, ClientCredentialsTokens
from openbank_sdk.errors import PermissionDenied, from_rpc_error

TOTP_STEP_SECONDS = 30
TOTP_DIGITS = 6
# The bank accepts a code from one step either side of now, each step once per customer.
TOTP_DRIFT_STEPS = 1


def totp_code(secret_base32: str, step: int) -> str:
    """The RFC 6238 code (SHA-1, 6 digits) of time step ``step`` for a base32 seed."""
    cleaned = secret_base32.strip().replace(" ", "").upper()
    seed = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    mac = hmac.new(seed, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**TOTP_DIGITS).zfill(TOTP_DIGITS)


class TotpAuthenticator:
    """A customer's authenticator app that never shows the same step's code twice.

    The bank accepts each step's code once; the next code it accepts belongs to a later step,
    at most one step ahead of now. When that is too far ahead, :meth:`next_code` waits.
    """

    def __init__(self, secret_base32: str, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret_base32
        self._clock = clock
        self._last_step: int | None = None

    async def next_code(self) -> str:
        """A code for the earliest step the bank will still accept and has not seen from us."""
        while True:
            current = int(self._clock() // TOTP_STEP_SECONDS)
            # Start at the current step: an older one may fall out of the window in transit.
            step = current if self._last_step is None else max(current, self._last_step + 1)
            if step <= current + TOTP_DRIFT_STEPS:
                self._last_step = step
                return totp_code(self._secret, step)
            await asyncio.sleep((current + 1) * TOTP_STEP_SECONDS - self._clock() + 0.05)


# One authenticator per seed in this process, so two flows never replay the same step.
_AUTHENTICATORS: dict[str, TotpAuthenticator] = {}


def authenticator(secret_base32: str) -> TotpAuthenticator:
    """The process-wide authenticator of a TOTP seed."""
    return _AUTHENTICATORS.setdefault(secret_base32, TotpAuthenticator(secret_base32))


class SandboxBankApp:
    """The bank's customer app, for sandboxes: authorises consents as a test customer."""

    def __init__(self, channel: grpc.aio.Channel, client_id: str, client_secret: str, *, timeout: float = 10.0) -> None:
        self._stub = consent_pb2_grpc.ConsentServiceStub(channel)
        self._tokens = ClientCredentialsTokens(
            channel, ClientCredentials(client_id, client_secret), ["consents:authorise"], timeout=timeout
        )
        self._timeout = timeout

    async def authorise(
        self,
        consent: str,
        *,
        username: str,
        password: str,
        totp_secret: str,
        accounts: Sequence[str],
    ) -> consent_pb2.AuthoriseConsentResponse:
        """Authorise ``consent`` for ``accounts`` as the customer; returns the authorization code.

        A code the bank refuses as already used (another process of the sandbox used the same
        step) is followed by one more try with a later step; a second refusal is raised, since
        five failures in a row lock the customer.
        """
        for attempt in range(2):
            request = consent_pb2.AuthoriseConsentRequest(
                request_id=f"sandbox-{uuid.uuid4().hex}",
                name=consent,
                username=username,
                password=password,
                one_time_code=await authenticator(totp_secret).next_code(),
                accounts=list(accounts),
            )
            try:
                return await self._stub.AuthoriseConsent(
                    request, metadata=await self._tokens.metadata(), timeout=self._timeout
                )
            except grpc.aio.AioRpcError as error:
                decoded = from_rpc_error(error)
                if attempt == 0 and isinstance(decoded, PermissionDenied) and decoded.reason == "SCA_FAILED":
                    continue
                raise decoded from None
        raise AssertionError("unreachable")
