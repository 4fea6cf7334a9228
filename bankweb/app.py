"""Wiring: the one place that builds the bank web app's adapters, and runs its HTTP server."""

from __future__ import annotations

import logging
from typing import Any

from bankweb.activation import ActivationPages, Activator, GrpcActivator
from bankweb.credit import CreditBank, CreditOffers
from bankweb.credit_web import CreditRoutes
from bankweb.dashboard import Dashboard
from bankweb.flows import AuthorisationFlow
from bankweb.grpc_bank import AUDIT_SCOPES, SCOPES, GrpcBank
from bankweb.grpc_credit import GrpcCredit
from bankweb.grpc_isolation import GrpcIsolation
from bankweb.grpc_step_up import GrpcStepUp
from bankweb.isolation import CustomerLimits, IsolationBank
from bankweb.isolation_web import IsolationRoutes
from bankweb.ports import Bank, SessionStore
from bankweb.serving import RunningSite, serve
from bankweb.sessions import AttemptLimiter, MemorySessionStore, RedisSessionStore
from bankweb.settings import BankWebSettings
from bankweb.step_up import PaymentConfirmations, StepUpBank
from bankweb.step_up_web import StepUpRoutes
from bankweb.web import BankWeb, build_app
from meshlib.auth.service_tokens import ServiceTokenSource
from meshlib.clients import ChannelSettings, open_channel

log = logging.getLogger("bankweb")


def _channel(settings: BankWebSettings, target: str) -> Any:
    return open_channel(
        ChannelSettings(
            target=target,
            tls_ca_file=settings.peer_tls_ca_file,
            tls_cert_file=settings.peer_tls_cert_file,
            tls_key_file=settings.peer_tls_key_file,
        )
    )


def wire(
    settings: BankWebSettings,
    bank: Bank | None = None,
    activator: Activator | None = None,
    step_up: StepUpBank | None = None,
    isolation: IsolationBank | None = None,
    credit: CreditBank | None = None,
) -> tuple[BankWeb, list[Any]]:
    """The web app over gRPC (or over ``bank``, ``activator`` and ``step_up``, for tests); returns
    it and what to close."""
    closers: list[Any] = []
    if bank is None:
        if settings.service_client_secret is None:
            raise SystemExit(
                "bankweb needs OBM_SERVICE_CLIENT_SECRET (its internal client: consents:authorise, audit:read)"
            )
        identity = _channel(settings, settings.identity_target)
        account = _channel(settings, settings.account_target)
        payment = _channel(settings, settings.payment_target)
        closers += [identity.close, account.close, payment.close]
        secret = settings.service_client_secret.get_secret_value()
        tokens = ServiceTokenSource(identity, settings.service_client_id, secret, SCOPES)
        # A token of its own for payment's audit trail: a client without audit:read still serves
        # every page (the dashboard then shows no payments).
        audit_tokens = ServiceTokenSource(identity, settings.service_client_id, secret, AUDIT_SCOPES)
        bank = GrpcBank(identity, account, tokens, payment, audit_tokens)
        activator = GrpcActivator(identity, tokens.token)
        step_up = GrpcStepUp(payment, tokens)
        isolation = GrpcIsolation(payment, tokens)
        credit = GrpcCredit(account, tokens)
    sessions: SessionStore
    if settings.redis_url is not None:
        redis_sessions = RedisSessionStore(settings.redis_url.get_secret_value())
        closers.append(redis_sessions.close)
        sessions = redis_sessions
    else:
        sessions = MemorySessionStore()
    limiter = AttemptLimiter(
        settings.bankweb_signin_attempts,
        settings.bankweb_signin_attempts_per_address,
        settings.bankweb_signin_window_seconds,
    )
    flow = AuthorisationFlow(bank, sessions, limiter, settings.bankweb_session_idle_seconds)
    dashboard = Dashboard(flow, bank)
    secure = settings.bankweb_secure_cookies
    activation = ActivationPages(activator, sessions, secure_cookies=secure) if activator is not None else None
    confirmations = (
        StepUpRoutes(flow, PaymentConfirmations(dashboard, step_up, bank), sessions, secure_cookies=secure)
        if step_up is not None
        else None
    )
    web = BankWeb(flow, dashboard, sessions, secure_cookies=secure, activation=activation, step_up=confirmations)
    if credit is not None:  # the credit line offers wallets ask the bank for
        web.credit = CreditRoutes(flow, CreditOffers(dashboard, credit), sessions, secure_cookies=secure)
    if isolation is not None:  # dynamic isolation: the dashboard's notice, the restore page
        web.customer_limits = CustomerLimits(dashboard, isolation)
        web.isolation = IsolationRoutes(flow, web.customer_limits, sessions, secure_cookies=secure)
    return web, closers


async def start_bankweb(settings: BankWebSettings, bank: Bank | None = None) -> RunningSite:
    """Bind (port 0 picks a free one), serve in the background, return once listening."""
    web, closers = wire(settings, bank)
    running = await serve(build_app(web), settings.host, settings.bankweb_port, "bankweb", closers)
    log.info("bank web app serving", extra={"port": running.port})
    return running
