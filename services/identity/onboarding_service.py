"""Account opening through a partner: the application, the bank's decision, the customer, its
account and the partner's consent, and the customer's activation on the bank's page.

Every step is its own idempotent transaction and can be repeated: the decision (with the
customer and the consent when approved) is one; opening the account is a peer call whose
request_id is derived from the application, so a repeat after a crash opens the same
account, followed by a transaction recording it; ``open_waiting_accounts`` finishes what a
crash left between the two.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hmac
import logging
import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import yaml

from meshlib import totp
from meshlib.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size, time_and_id
from meshlib.storage import Codec, IdempotencyKey, Transactions
from services.identity.common import Clock, Saved, UnitOfWorkFactory
from services.identity.domain import consents as consent_rules
from services.identity.domain import onboarding as rules
from services.identity.domain import product_access
from services.identity.domain.customers import MIN_PASSWORD_LENGTH, Customer, new_customer_id
from services.identity.domain.events import EventType, NewEvent
from services.identity.domain.onboarding import Application, ApplicationState, OnboardingRules, ScreeningList
from services.identity.domain.secrets import ClientSecretHasher, SecretBox, SecretHasher
from services.identity.notifier import CustomerMessage, CustomerNotifier
from services.identity.unit_of_work import IdentityUnitOfWork

log = logging.getLogger("identity.onboarding")
CONSENT_LIFETIME = dt.timedelta(days=90)
CONSENT_READS_PER_DAY = 4
# How long a submission or a decision waits for the account to open before answering APPROVED
# (the retry job opens it): within the gateway's deadline for the rpc.
INLINE_OPENING_SECONDS = 2.0
# Crash tests: where identity may be made to exit abruptly (OBM_ONBOARDING_FAILPOINT).
FAILPOINTS = frozenset({"after_decision_commit", "after_account_opened", "before_activation_commit"})


class AccountOpener(Protocol):
    """Opens the new customer's current account (the account service)."""

    async def open(self, request_id: str, customer_id: str, currency: str, display_name: str) -> str:
        """The account id; the same request_id opens the same account."""
        ...


@dataclass(frozen=True)
class Activation:
    """An activated customer and its authenticator seed (shown once)."""

    customer_id: str
    username: str
    totp_seed: bytes


class OnboardingService:
    """Submit, read, decide (operators) and activate applications."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        hasher: SecretHasher,
        box: SecretBox,
        bank_rules: OnboardingRules,
        screening: ScreeningList,
        accounts: AccountOpener | None,
        clock: Clock,
        bank_web_url: str,
        *,
        codes: ClientSecretHasher,
        notifier: CustomerNotifier,
        failpoint: str | None = None,
    ) -> None:
        if failpoint and failpoint not in FAILPOINTS:
            raise ValueError(f"unknown failpoint {failpoint!r}; known: {', '.join(sorted(FAILPOINTS))}")
        self._failpoint = failpoint or None
        self._uow = uow
        self._tx = Transactions(uow, clock=clock)
        self._hasher = hasher
        self._box = box
        self._rules = bank_rules
        self._screening = screening
        self._accounts = accounts
        self._clock = clock
        self._web = bank_web_url.rstrip("/")
        # The customer's own activation code: a keyed hash at rest, the code itself only to
        # the applicant through the notifier (the wallet holds the link, not this code).
        self._codes = codes
        self._notifier = notifier

    async def submit(
        self,
        key: IdempotencyKey,
        codec: Codec[Application | Saved],
        partner_id: str,
        raw: rules.RawApplication,
        permissions: tuple[str, ...],
        code_challenge: str,
    ) -> Application | Saved:
        """The bank's decision on a new application; approved, the customer, consent and account."""
        now = self._clock()
        applicant = rules.validate(raw, self._rules, now)
        # Bad consent fields fail before anything is decided.
        consent_rules.create(self._consent_request(permissions, code_challenge, now), partner_id, now)
        # The Argon2 hash (slow) only when the checks that need no store would approve.
        approvable = rules.decide(applicant, self._rules, self._screening, duplicate=False, now=now)
        unusable_password = ""
        if approvable[0] is ApplicationState.APPROVED:
            unusable_password = await self._unusable_password()

        issued: dict[str, str] = {}

        async def operation(uow: IdentityUnitOfWork) -> Application:
            duplicate = await uow.applications.known_person(applicant.identity_key(), applicant.document_key())
            state, reason = rules.decide(applicant, self._rules, self._screening, duplicate=duplicate, now=now)
            application = Application(
                application_id=rules.new_application_id(),
                partner_id=partner_id,
                state=state,
                reason=reason,
                applicant=applicant,
                currency=raw.currency,
                consent_permissions=permissions,
                code_challenge=code_challenge,
                identity_key=applicant.identity_key(),
                document_key=applicant.document_key(),
                created_at=now,
                updated_at=now,
            )
            if state is ApplicationState.APPROVED:
                application = await self._provision(uow, application, unusable_password, now, issued)
            await uow.applications.add(application)
            _audit(uow, "application.submit", application)
            return application

        result = await self._tx.run(operation, key=key, codec=codec)
        if isinstance(result, Application):
            log.info(
                "application decided", extra={"application_id": result.application_id, "state": result.state.value}
            )
            if result.state is ApplicationState.APPROVED:
                await self._send_customer_code(result, issued)
                self._crash_at("after_decision_commit")
                return await self._open_account_inline(result)
        return result

    async def get(self, application_id: str, *, partner_id: str | None) -> Application:
        """One application (of ``partner_id``; None: operators read any)."""
        async with self._uow(read_only=True) as uow:
            application = await uow.applications.get(application_id)
        if application is None or (partner_id is not None and application.partner_id != partner_id):
            raise NotFound("application not found", metadata={"resource_name": f"applications/{application_id}"})
        return application

    async def partner_view(self, application_id: str, partner_id: str) -> tuple[Application, bool]:
        """One of the partner's applications, and whether it may see the customer's data in it
        (only under the customer's consent: see domain/product_access.py)."""
        async with self._uow(read_only=True) as uow:
            application = await uow.applications.get(application_id)
            if application is None or application.partner_id != partner_id:
                raise NotFound("application not found", metadata={"resource_name": f"applications/{application_id}"})
            consent = await uow.consents.get(application.consent_id) if application.consent_id else None
        return application, product_access.partner_reads_holdings(application, consent, self._clock())

    async def list_for_customer(
        self, customer_id: str, requested_size: int, page_token: str
    ) -> tuple[list[Application], dict[str, str], str]:
        """A customer's applications, newest first; its partners' display names; the next page token."""
        size = page_size(requested_size)
        filters = filter_fingerprint(customer=customer_id)
        before = time_and_id(decode_page_token(page_token, filters))
        async with self._uow(read_only=True) as uow:
            found = await uow.applications.page_for_customer(customer_id, before, size + 1)
            page = found[:size]
            names: dict[str, str] = {}
            for partner_id in sorted({a.partner_id for a in page}):
                partner = await uow.partners.get(partner_id)
                if partner is not None:
                    names[partner_id] = partner.display_name
        token = ""
        if len(found) > size:
            token = encode_page_token({"t": page[-1].created_at.isoformat(), "id": page[-1].application_id}, filters)
        return page, names, token

    async def list(
        self, state: ApplicationState | None, requested_size: int, page_token: str
    ) -> tuple[list[Application], str]:
        """Oldest first (operators); the next page token ('' at the end)."""
        size = page_size(requested_size)
        filters = filter_fingerprint(state=state.value if state else "")
        after = time_and_id(decode_page_token(page_token, filters))
        async with self._uow(read_only=True) as uow:
            found = await uow.applications.page(state, after, size + 1)
        page, token = found[:size], ""
        if len(found) > size:
            token = encode_page_token({"t": page[-1].created_at.isoformat(), "id": page[-1].application_id}, filters)
        return page, token

    async def decide_referred(
        self, key: IdempotencyKey, codec: Codec[Application | Saved], application_id: str, approve: bool, operator: str
    ) -> Application | Saved:
        """An operator approves or declines a REFERRED application."""
        now = self._clock()
        unusable_password = await self._unusable_password()
        issued: dict[str, str] = {}

        async def operation(uow: IdentityUnitOfWork) -> Application:
            found = await uow.applications.get(application_id, for_update=True)
            if found is None:
                raise NotFound("application not found", metadata={"resource_name": f"applications/{application_id}"})
            application = found.referred_decision(approve, operator, now)
            if application.state is ApplicationState.APPROVED:
                application = await self._provision(uow, application, unusable_password, now, issued)
            await uow.applications.save(application)
            _audit(uow, "application.decide", application)
            return application

        result = await self._tx.run(operation, key=key, codec=codec)
        if isinstance(result, Application) and result.state is ApplicationState.APPROVED:
            await self._send_customer_code(result, issued)
            self._crash_at("after_decision_commit")
            return await self._open_account_inline(result)
        return result

    async def activate(
        self,
        key: IdempotencyKey,
        codec: Codec[Activation | Saved],
        application_id: str,
        code: str,
        customer_code: str,
        password: str,
    ) -> Activation | Saved:
        """The customer's own password and its authenticator, against the link's one-time code
        and the customer's own code (sent to the applicant, not the partner): a wrong customer
        code is counted, MAX_CUSTOMER_CODE_ATTEMPTS of them lock activation."""
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidArgument.field("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        now = self._clock()
        # The wrong entry must be counted even though the activation is refused: its own
        # transaction, committed before the refusal is raised.
        refusal = await self._tx.run(
            lambda uow: self._check_customer_code(uow, application_id, code, customer_code, now)
        )
        if refusal is not None:
            raise refusal

        async def operation(uow: IdentityUnitOfWork) -> Activation:
            application = await self._waiting(uow, application_id, code)
            # Checked again under this transaction's lock (a concurrent wrong entry may have locked it).
            if application.activation_locked_at is not None or not self._customer_code_matches(
                application, customer_code
            ):
                raise PermissionDenied("the customer code is not valid", reason="ACTIVATION_CUSTOMER_CODE_INVALID")
            assert application.customer_id is not None
            customer = await uow.customers.get(application.customer_id)
            assert customer is not None
            await uow.customers.set_password(customer.customer_id, password_hash, now)
            activated = application.activated(now)
            await uow.applications.save(activated)
            _audit(uow, "customer.activate", activated)
            self._crash_at("before_activation_commit")
            seed = self._box.open(customer.sealed_totp_seed, context=customer.customer_id.encode())
            return Activation(customer.customer_id, customer.username, seed)

        return await self._tx.run(operation, key=key, codec=codec)

    async def reissue_customer_code(
        self, key: IdempotencyKey, codec: Codec[Application | Saved], application_id: str, operator: str
    ) -> Application | Saved:
        """An operator sends the applicant a new customer code (the old one no longer works,
        attempts reset, a lock lifted): the customer asked the bank after a lock or a lost code."""
        now = self._clock()
        issued: dict[str, str] = {}

        async def operation(uow: IdentityUnitOfWork) -> Application:
            application = await uow.applications.get(application_id, for_update=True)
            if application is None:
                raise NotFound("application not found", metadata={"resource_name": f"applications/{application_id}"})
            if application.state is not ApplicationState.ACCOUNT_OPEN:
                raise FailedPrecondition(
                    "only an application waiting for activation gets a new code",
                    reason="INVALID_STATE_TRANSITION",
                    metadata={"state": application.state.value},
                )
            reissued = self._with_customer_code(application, now, issued)
            await uow.applications.save(reissued)
            uow.audit.record(
                "application.customer_code_reissue",
                f"applications/{application_id}",
                partner_id=application.partner_id,
                customer_id=application.customer_id,
                details={"operator": operator, "attempts_before": application.activation_attempts},
            )
            return reissued

        result = await self._tx.run(operation, key=key, codec=codec)
        if isinstance(result, Application):  # a replay sends nothing again
            await self._send_customer_code(result, issued)
        return result

    async def _waiting(self, uow: IdentityUnitOfWork, application_id: str, code: str) -> Application:
        """The application waiting for activation whose link code this is (locked for update)."""
        application = await uow.applications.get(application_id, for_update=True)
        if (
            application is None
            or application.state is not ApplicationState.ACCOUNT_OPEN
            or application.activation_code_hash is None
            or application.customer_id is None
            or not hmac.compare_digest(application.activation_code_hash, rules.code_hash(code))
        ):
            raise PermissionDenied("the activation code is not valid", reason="ACTIVATION_CODE_INVALID")
        return application

    def _customer_code_matches(self, application: Application, customer_code: str) -> bool:
        return self._codes.verify(
            application.customer_code_hash, rules.customer_code_input(customer_code, application.application_id)
        )

    async def _check_customer_code(
        self, uow: IdentityUnitOfWork, application_id: str, code: str, customer_code: str, now: dt.datetime
    ) -> PermissionDenied | None:
        """None when the customer code is right; else the refusal, the wrong entry counted (and audited)."""
        application = await self._waiting(uow, application_id, code)
        if application.activation_locked_at is not None:
            return _locked()
        if application.customer_code_expires_at is None or now >= application.customer_code_expires_at:
            return PermissionDenied(
                "the customer code has expired; the bank sends a new one on request",
                reason="ACTIVATION_CUSTOMER_CODE_EXPIRED",
            )
        if self._customer_code_matches(application, customer_code):
            return None
        counted = application.wrong_customer_code(now)
        await uow.applications.save(counted)
        uow.audit.record(
            "customer.activate",
            f"applications/{application_id}",
            outcome="LOCKED" if counted.activation_locked_at else "WRONG_CUSTOMER_CODE",
            partner_id=application.partner_id,
            customer_id=application.customer_id,
            details={"attempts": counted.activation_attempts},
        )
        if counted.activation_locked_at is not None:
            return _locked()
        left = rules.MAX_CUSTOMER_CODE_ATTEMPTS - counted.activation_attempts
        return PermissionDenied(
            "the customer code is not valid",
            reason="ACTIVATION_CUSTOMER_CODE_INVALID",
            metadata={"attempts_left": str(left)},
        )

    def _with_customer_code(self, application: Application, now: dt.datetime, issued: dict[str, str]) -> Application:
        """A fresh customer code: its keyed hash on the application, the code in ``issued`` for
        sending once the transaction commits."""
        code = rules.new_customer_code()
        issued[application.application_id] = code
        return application.customer_code_issued(
            self._codes.hash(rules.customer_code_input(code, application.application_id)), now
        )

    async def _send_customer_code(self, application: Application, issued: dict[str, str]) -> None:
        """Send the committed code to the applicant's own contact (never in an answer or event)."""
        code = issued.get(application.application_id)
        if code is None:
            return
        expires = application.customer_code_expires_at
        try:
            await self._notifier.send(
                CustomerMessage(
                    to_email=application.applicant.email,
                    kind="activation_code",
                    application_id=application.application_id,
                    subject="Your activation code",
                    body=(
                        f"Your code to activate your new account is {code}. Enter it on the bank's activation "
                        f"page your app opens for you{f' before {expires:%Y-%m-%d}' if expires else ''}. "
                        "The bank never asks for it by phone; do not give it to anyone, your app included."
                    ),
                    code=code,
                    time=self._clock(),
                )
            )
        except Exception:
            # The decision stands; the customer asks the bank, an operator re-issues the code.
            log.exception("could not send the activation code", extra={"application_id": application.application_id})

    def activation_uri(self, application: Application) -> str:
        """The bank's one-time activation page, while the account waits for its customer."""
        if application.state is not ApplicationState.ACCOUNT_OPEN or application.sealed_activation_code is None:
            return ""
        code = self._box.open(application.sealed_activation_code, context=application.application_id.encode())
        return f"{self._web}/activate/{application.application_id}?code={code.decode()}"

    async def open_account(self, application: Application) -> Application:
        """Open the approved application's account (again: the same one) and record it."""
        if self._accounts is None or application.customer_id is None:
            return application
        account_id = await self._accounts.open(
            f"onboarding-{application.application_id}",
            application.customer_id,
            application.currency,
            f"{application.applicant.full_name} current account"[:100],
        )
        self._crash_at("after_account_opened")

        async def operation(uow: IdentityUnitOfWork) -> Application:
            current = await uow.applications.get(application.application_id, for_update=True)
            assert current is not None
            opened = current.account_opened(account_id, self._clock())
            if opened is not current:
                await uow.applications.save(opened)
                _audit(uow, "application.account_open", opened)
            return opened

        return await self._tx.run(operation)

    async def open_waiting_accounts(self) -> int:
        """Finish approved applications whose account a crash or an outage left unopened."""
        async with self._uow(read_only=True) as uow:
            waiting = await uow.applications.waiting_for_account(20)
        opened = 0
        for application in waiting:
            if (await self._open_account_quietly(application)).state is ApplicationState.ACCOUNT_OPEN:
                opened += 1
        return opened

    async def _open_account_inline(self, application: Application) -> Application:
        """Open it now if that is quick; else it stays APPROVED for the retry job (the same
        request_id: an opening cut short here and repeated there opens one account)."""
        try:
            return await asyncio.wait_for(self._open_account_quietly(application), INLINE_OPENING_SECONDS)
        except TimeoutError:
            log.warning("opening the account takes long", extra={"application_id": application.application_id})
            return application

    async def _open_account_quietly(self, application: Application) -> Application:
        try:
            return await self.open_account(application)
        except Exception:
            # The application stays APPROVED; open_waiting_accounts tries again.
            log.warning("could not open the account yet", extra={"application_id": application.application_id})
            return application

    def _crash_at(self, point: str) -> None:
        """Crash tests: exit abruptly (no clean-up, no commit) at the configured point."""
        if self._failpoint == point:
            log.warning("failpoint reached, exiting", extra={"failpoint": point})
            os._exit(137)

    async def _unusable_password(self) -> str:
        """The hash of a password nobody knows: the customer chooses its own at activation."""
        return await asyncio.to_thread(self._hasher.hash, secrets.token_urlsafe(32))

    def _consent_request(
        self, permissions: tuple[str, ...], code_challenge: str, now: dt.datetime
    ) -> consent_rules.ConsentRequest:
        return consent_rules.ConsentRequest(
            permissions=permissions,
            expires_at=now + CONSENT_LIFETIME,
            per_payment_limit=None,
            period_limit=None,
            period=None,
            reads_per_day=CONSENT_READS_PER_DAY,
            code_challenge=code_challenge,
            code_challenge_method="S256",
        )

    async def _provision(
        self,
        uow: IdentityUnitOfWork,
        application: Application,
        unusable_password: str,
        now: dt.datetime,
        issued: dict[str, str],
    ) -> Application:
        """The customer (credentials set at activation), its sealed authenticator seed, and the
        partner's consent awaiting the customer, in the deciding transaction."""
        customer_id = new_customer_id()
        username = rules.username_for(application.applicant, application.application_id)
        seed = totp.new_totp_secret()
        sealed = self._box.seal(seed, context=customer_id.encode())
        display_name = application.applicant.full_name[:200]
        customer = Customer.new(customer_id, username, display_name, unusable_password, sealed, now)
        await uow.customers.add(customer)
        uow.audit.record(
            "customer.create", f"customers/{customer_id}", customer_id=customer_id, details={"username": username}
        )
        request = self._consent_request(application.consent_permissions, application.code_challenge, now)
        consent = consent_rules.create(request, application.partner_id, now)
        await uow.consents.add(consent)
        uow.audit.record(
            "consent.create",
            f"consents/{consent.consent_id}",
            partner_id=application.partner_id,
            details={"application": application.application_id},
        )
        code = rules.new_activation_code()
        application = self._with_customer_code(application, now, issued)
        return replace(
            application,
            customer_id=customer_id,
            username=username,
            consent_id=consent.consent_id,
            sealed_activation_code=self._box.seal(code.encode(), context=application.application_id.encode()),
            activation_code_hash=rules.code_hash(code),
            updated_at=now,
        )


def _locked() -> PermissionDenied:
    return PermissionDenied(
        "activation is locked after too many wrong customer codes; the bank sends a new code on request",
        reason="ACTIVATION_LOCKED",
    )


def _audit(uow: IdentityUnitOfWork, action: str, application: Application) -> None:
    """Audited, and told to the partner in its event log (with the change, in its transaction)."""
    uow.partner_events.record(
        NewEvent(
            partner_id=application.partner_id,
            type=EventType.APPLICATION_STATE_CHANGED,
            resource=f"applications/{application.application_id}",
            consent_id=application.consent_id or "",
            event_time=application.updated_at,
            data={"state": application.state.value, "reason": application.reason.value},
        )
    )
    uow.audit.record(
        action,
        f"applications/{application.application_id}",
        outcome=application.state.value,
        partner_id=application.partner_id,
        customer_id=application.customer_id,
        details={"reason": application.reason.value},
    )


def load_rules(path: Path) -> OnboardingRules:
    """The bank's onboarding rules from YAML (read once at start)."""
    data = yaml.safe_load(path.read_text())
    documents = {str(k): str(v) for k, v in data["documents"].items()}
    if any(v not in ("accept", "refer") for v in documents.values()):
        raise ValueError(f"{path}: each document rule is accept or refer")
    return OnboardingRules(
        minimum_age_years=int(data["minimum_age_years"]),
        terms_versions=frozenset(str(v) for v in data["terms_versions"]),
        documents=documents,
        evidence_max_age=dt.timedelta(days=float(data["evidence_max_age_days"])),
        currencies=frozenset(str(c) for c in data["currencies"]),
    )


def load_screening_list(path: Path) -> ScreeningList:
    """The sanctions and watch list from CSV (name, birth_date; '#' lines are comments)."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    rows = []
    for row in csv.DictReader(lines):
        born = (row.get("birth_date") or "").strip()
        rows.append((row["name"], dt.date.fromisoformat(born) if born else None))
    return ScreeningList.of(rows)
