"""A full flow at DEBUG level leaves no secret, password, one-time code or token in the logs."""

from __future__ import annotations

import logging
import re

from openbank.identity.v1 import consent_pb2, customer_pb2, token_pb2
from tests.integration.identity.harness import (
    PASSWORD,
    SECRETS,
    failure,
    pkce_pair,
    request_id,
    start_identity,
    stop_identity,
)

# Bookkeeping attributes every record has (times, thread ids): not log content.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) - {"msg", "args"}


class _Capture(logging.Handler):
    """Keeps every record's message, arguments, extras and traceback, unredacted."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRIBUTES}
        text = f"{record.getMessage()} {record.args!r} {extras!r}"
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.texts.append(text)


async def test_a_full_flow_logs_no_secrets(sqlite_url: str) -> None:
    capture = _Capture()
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        identity = await start_identity(sqlite_url)
        try:
            partner = await identity.register_partner()
            verifier, challenge = pkce_pair()
            consent = await identity.create_consent(partner, challenge)
            customer = await identity.create_customer()
            code = customer.code()
            # A failed SCA and a successful one, an exchange, a refresh, a revocation.
            await failure(
                identity.consents.AuthoriseConsent(
                    consent_pb2.AuthoriseConsentRequest(
                        request_id=request_id(),
                        name=consent.name,
                        username=customer.username,
                        password="wrong-password-123",
                        one_time_code=code,
                        accounts=["accounts/a1"],
                    ),
                    metadata=await identity.bank_app(),
                )
            )
            authorised = await identity.consents.AuthoriseConsent(
                consent_pb2.AuthoriseConsentRequest(
                    request_id=request_id(),
                    name=consent.name,
                    username=customer.username,
                    password=PASSWORD,
                    one_time_code=code,
                    accounts=["accounts/a1"],
                ),
                metadata=await identity.bank_app(),
            )
            tokens = await identity.exchange(partner, authorised.authorization_code, verifier)
            refreshed = await identity.refresh(partner, tokens.refresh_token)
            await failure(identity.refresh(partner, tokens.refresh_token))
            await identity.tokens.RevokeToken(
                token_pb2.RevokeTokenRequest(
                    client_id=partner.client_id, client_secret=partner.secret, token=refreshed.access_token
                )
            )
            await failure(
                identity.tokens.IssueToken(
                    token_pb2.IssueTokenRequest(
                        grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
                        client_id=partner.client_id,
                        client_secret="a-wrong-client-secret",
                        scopes=["consents:write"],
                    )
                )
            )
            authenticated = await identity.customers.AuthenticateCustomer(
                customer_pb2.AuthenticateCustomerRequest(
                    request_id=request_id(),
                    username=customer.username,
                    password=PASSWORD,
                    one_time_code=customer.code(),
                ),
                metadata=await identity.bank_app(),
            )
            assert authenticated.customer == customer.name
            service_tokens = [await identity.service_token(c) for c in SECRETS]
        finally:
            await stop_identity(identity)
    finally:
        root.removeHandler(capture)
        root.setLevel(previous_level)

    assert capture.texts, "the flow should have logged something"
    forbidden = {
        "client secret": partner.secret,
        "password": PASSWORD,
        "wrong password": "wrong-password-123",
        "wrong client secret": "a-wrong-client-secret",
        "one-time code": code,
        "totp seed": customer.seed.hex(),
        "authorization code": authorised.authorization_code,
        "code verifier": verifier,
        "access token": tokens.access_token,
        "refresh token": tokens.refresh_token,
        "rotated refresh token": refreshed.refresh_token,
        **{f"internal secret {name}": secret for name, secret in SECRETS.items()},
        **{f"service token {i}": token for i, token in enumerate(service_tokens)},
    }
    logged = "\n".join(capture.texts)
    # Whole-token matches, so a 6-digit code cannot "appear" inside a longer number.
    leaks = [
        what
        for what, value in forbidden.items()
        if value and re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", logged)
    ]
    assert not leaks, f"found in the logs: {leaks}"
