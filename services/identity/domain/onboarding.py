"""The bank's checks of an application for a new customer's account (no I/O).

Order of the checks, first outcome wins: the applicant's input (bad input is INVALID_ARGUMENT,
not a decision), duplicate customer, sanctions list (name and date of birth: declined), watch
list (name only: referred), minimum age, evidence age, document rules. Names are compared
normalised: accents dropped (NFKD), case folded, anything but letters a space, the words
sorted, so "Müller, Hans" matches "hans MULLER".
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import re
import secrets
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from meshlib.errors import FailedPrecondition, FieldCollector

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_DOCUMENT_TYPE = re.compile(r"^[A-Z][A-Z_]{1,31}$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
# The activation window: the customer's code is valid this long after it was issued.
CUSTOMER_CODE_LIFETIME = dt.timedelta(days=14)
# Wrong customer codes before activation locks (an operator issues a new code).
MAX_CUSTOMER_CODE_ATTEMPTS = 5


class ApplicationState(enum.Enum):
    """Where an application is (contract: ApplicationState)."""

    REFERRED = "REFERRED"
    DECLINED = "DECLINED"
    APPROVED = "APPROVED"
    ACCOUNT_OPEN = "ACCOUNT_OPEN"
    ACTIVE = "ACTIVE"


class Reason(enum.Enum):
    """Why (contract: ApplicationReason)."""

    CHECKS_PASSED = "CHECKS_PASSED"
    DUPLICATE_CUSTOMER = "DUPLICATE_CUSTOMER"
    SANCTIONS_MATCH = "SANCTIONS_MATCH"
    WATCHLIST_POSSIBLE_MATCH = "WATCHLIST_POSSIBLE_MATCH"
    UNDER_MINIMUM_AGE = "UNDER_MINIMUM_AGE"
    DOCUMENT_EXPIRED = "DOCUMENT_EXPIRED"
    DOCUMENT_NOT_ACCEPTED = "DOCUMENT_NOT_ACCEPTED"
    DOCUMENT_NEEDS_REVIEW = "DOCUMENT_NEEDS_REVIEW"
    EVIDENCE_TOO_OLD = "EVIDENCE_TOO_OLD"
    OPERATOR_APPROVED = "OPERATOR_APPROVED"
    OPERATOR_DECLINED = "OPERATOR_DECLINED"


def normalise_name(name: str) -> str:
    """Accents dropped, case folded, punctuation a space, words sorted."""
    # Upper case first: a dotless i and a dotted one, or "ß" and "SS", compare equal.
    decomposed = unicodedata.normalize("NFKD", name.upper().casefold())
    letters = "".join(c if c.isalpha() else " " for c in decomposed if not unicodedata.combining(c))
    return " ".join(sorted(letters.split()))


@dataclass(frozen=True)
class ScreeningList:
    """The sanctions and watch list: normalised names, each with its dates of birth (empty: unknown)."""

    entries: Mapping[str, frozenset[dt.date]]

    @classmethod
    def of(cls, rows: Iterable[tuple[str, dt.date | None]]) -> ScreeningList:
        """From (name, date of birth or None) rows."""
        found: dict[str, set[dt.date]] = {}
        for name, born in rows:
            dates = found.setdefault(normalise_name(name), set())
            if born is not None:
                dates.add(born)
        return cls({name: frozenset(dates) for name, dates in found.items()})

    def screen(self, full_name: str, birth_date: dt.date) -> Reason | None:
        """SANCTIONS_MATCH (name and date of birth), WATCHLIST_POSSIBLE_MATCH (name only), or None."""
        dates = self.entries.get(normalise_name(full_name))
        if dates is None:
            return None
        return Reason.SANCTIONS_MATCH if birth_date in dates else Reason.WATCHLIST_POSSIBLE_MATCH


@dataclass(frozen=True)
class OnboardingRules:
    """The bank's configurable rules (identity's onboarding rules file)."""

    minimum_age_years: int
    terms_versions: frozenset[str]
    # Document type -> "accept" or "refer"; any other type is declined.
    documents: Mapping[str, str]
    evidence_max_age: dt.timedelta
    currencies: frozenset[str]


@dataclass(frozen=True)
class ApplicantData:
    """The applicant, the partner's evidence and the terms acceptance, validated."""

    given_name: str
    family_name: str
    birth_date: dt.date
    email: str
    country_code: str
    document_type: str
    document_number: str
    document_expiry: dt.date
    evidence_method: str
    verified_at: dt.datetime
    evidence_reference: str
    terms_version: str
    terms_accepted_at: dt.datetime

    @property
    def full_name(self) -> str:
        return f"{self.given_name} {self.family_name}"

    def identity_key(self) -> str:
        """Same person: same normalised name and date of birth."""
        return _digest(f"{normalise_name(self.full_name)}|{self.birth_date.isoformat()}")

    def document_key(self) -> str:
        """Same document: same type and number (spaces and case ignored)."""
        number = re.sub(r"\s+", "", self.document_number).upper()
        return _digest(f"{self.document_type}|{number}")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _date(text: str, field: str, errors: FieldCollector) -> dt.date | None:
    """The date, or None with the field named: any malformed text is bad input, never a crash
    (fromisoformat alone would also take other ISO forms such as 2000-W01-1)."""
    if _DATE.match(text):
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass  # e.g. 2000-02-30
    errors.add(field, "must be a date YYYY-MM-DD")
    return None


@dataclass(frozen=True)
class RawApplication:
    """A partner's SubmitApplication, unvalidated (timestamps None when unset)."""

    given_name: str
    family_name: str
    birth_date: str
    email: str
    country_code: str
    document_type: str
    document_number: str
    document_expiry: str
    evidence_method: str
    verified_at: dt.datetime | None
    evidence_reference: str
    terms_version: str
    terms_accepted_at: dt.datetime | None
    currency: str


def validate(raw: RawApplication, rules: OnboardingRules, now: dt.datetime) -> ApplicantData:
    """The applicant's data, or InvalidArgument naming every bad field."""
    errors = FieldCollector()
    for field, value, limit in (
        ("applicant.given_name", raw.given_name, 100),
        ("applicant.family_name", raw.family_name, 100),
        ("evidence.document_number", raw.document_number, 64),
        ("evidence.method", raw.evidence_method, 64),
    ):
        errors.check(0 < len(value.strip()) <= limit, field, f"required, 1..{limit} characters")
    errors.check(len(raw.evidence_reference) <= 128, "evidence.reference", "at most 128 characters")
    born = _date(raw.birth_date, "applicant.birth_date", errors)
    if born is not None and born > now.date():
        errors.add("applicant.birth_date", "must not be in the future")
    expiry = _date(raw.document_expiry, "evidence.document_expiry_date", errors)
    errors.check(bool(_EMAIL.match(raw.email)), "applicant.email", "must be an e-mail address")
    errors.check(bool(_COUNTRY.match(raw.country_code)), "applicant.country_code", "ISO 3166-1 alpha-2")
    errors.check(bool(_DOCUMENT_TYPE.match(raw.document_type)), "evidence.document_type", "e.g. PASSPORT")
    errors.check(raw.currency in rules.currencies, "currency_code", "a currency the bank opens accounts in")
    for field, when in (("evidence.verify_time", raw.verified_at), ("terms.accept_time", raw.terms_accepted_at)):
        errors.check(when is not None and when <= now, field, "required, not in the future")
    errors.check(raw.terms_version in rules.terms_versions, "terms.terms_version", "not a version the bank offers")
    errors.raise_if_any()
    assert born is not None and expiry is not None and raw.verified_at and raw.terms_accepted_at
    return ApplicantData(
        given_name=raw.given_name.strip(),
        family_name=raw.family_name.strip(),
        birth_date=born,
        email=raw.email,
        country_code=raw.country_code,
        document_type=raw.document_type,
        document_number=raw.document_number.strip(),
        document_expiry=expiry,
        evidence_method=raw.evidence_method.strip(),
        verified_at=raw.verified_at,
        evidence_reference=raw.evidence_reference,
        terms_version=raw.terms_version,
        terms_accepted_at=raw.terms_accepted_at,
    )


def age_in_years(born: dt.date, today: dt.date) -> int:
    """Completed years (someone born on 29 February turns a year older on 1 March)."""
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def decide(
    applicant: ApplicantData, rules: OnboardingRules, screening: ScreeningList, *, duplicate: bool, now: dt.datetime
) -> tuple[ApplicationState, Reason]:
    """The bank's decision; the first check that does not pass gives the reason."""
    if duplicate:
        return ApplicationState.DECLINED, Reason.DUPLICATE_CUSTOMER
    screened = screening.screen(applicant.full_name, applicant.birth_date)
    if screened is Reason.SANCTIONS_MATCH:
        return ApplicationState.DECLINED, screened
    if age_in_years(applicant.birth_date, now.date()) < rules.minimum_age_years:
        return ApplicationState.DECLINED, Reason.UNDER_MINIMUM_AGE
    if now - applicant.verified_at > rules.evidence_max_age:
        return ApplicationState.DECLINED, Reason.EVIDENCE_TOO_OLD
    rule = rules.documents.get(applicant.document_type)
    if rule is None:
        return ApplicationState.DECLINED, Reason.DOCUMENT_NOT_ACCEPTED
    if applicant.document_expiry < applicant.verified_at.date():
        return ApplicationState.DECLINED, Reason.DOCUMENT_EXPIRED
    if screened is not None:
        return ApplicationState.REFERRED, screened
    if rule == "refer":
        return ApplicationState.REFERRED, Reason.DOCUMENT_NEEDS_REVIEW
    return ApplicationState.APPROVED, Reason.CHECKS_PASSED


@dataclass(frozen=True)
class Application:
    """An application and what the bank made of it."""

    application_id: str
    partner_id: str
    state: ApplicationState
    reason: Reason
    applicant: ApplicantData
    currency: str
    consent_permissions: tuple[str, ...]
    code_challenge: str
    identity_key: str
    document_key: str
    created_at: dt.datetime
    updated_at: dt.datetime
    customer_id: str | None = None
    username: str | None = None
    account_id: str | None = None
    consent_id: str | None = None
    sealed_activation_code: bytes | None = None
    activation_code_hash: str | None = None
    decided_by: str | None = None
    # The customer's own activation code (sent to the applicant, never to the partner): its
    # keyed hash, its expiry, the wrong entries so far, and when too many locked activation.
    customer_code_hash: str | None = None
    customer_code_expires_at: dt.datetime | None = None
    activation_attempts: int = 0
    activation_locked_at: dt.datetime | None = None

    def customer_code_issued(self, code_hash: str, now: dt.datetime) -> Application:
        """A new customer code (issued on approval, or again by an operator): attempts reset."""
        return replace(
            self,
            customer_code_hash=code_hash,
            customer_code_expires_at=now + CUSTOMER_CODE_LIFETIME,
            activation_attempts=0,
            activation_locked_at=None,
            updated_at=now,
        )

    def wrong_customer_code(self, now: dt.datetime) -> Application:
        """One more wrong entry; the last allowed one locks activation."""
        attempts = self.activation_attempts + 1
        locked = now if attempts >= MAX_CUSTOMER_CODE_ATTEMPTS else self.activation_locked_at
        return replace(self, activation_attempts=attempts, activation_locked_at=locked, updated_at=now)

    def referred_decision(self, approve: bool, operator: str, now: dt.datetime) -> Application:
        """An operator's decision on a REFERRED application."""
        if self.state is not ApplicationState.REFERRED:
            raise FailedPrecondition(
                "only a referred application waits for an operator",
                reason="INVALID_STATE_TRANSITION",
                metadata={"state": self.state.value},
            )
        state, reason = (
            (ApplicationState.APPROVED, Reason.OPERATOR_APPROVED)
            if approve
            else (ApplicationState.DECLINED, Reason.OPERATOR_DECLINED)
        )
        return replace(self, state=state, reason=reason, decided_by=operator, updated_at=now)

    def account_opened(self, account_id: str, now: dt.datetime) -> Application:
        """The account is open (opening twice keeps the first)."""
        if self.state is not ApplicationState.APPROVED:
            return self
        return replace(self, state=ApplicationState.ACCOUNT_OPEN, account_id=account_id, updated_at=now)

    def activated(self, now: dt.datetime) -> Application:
        """The customer activated its access; the activation code is gone."""
        return replace(
            self,
            state=ApplicationState.ACTIVE,
            sealed_activation_code=None,
            activation_code_hash=None,
            customer_code_hash=None,
            customer_code_expires_at=None,
            updated_at=now,
        )


def new_application_id() -> str:
    """A fresh application id."""
    return uuid.uuid4().hex


def new_activation_code() -> str:
    """A one-time activation code (256 bits)."""
    return secrets.token_urlsafe(32)


def code_hash(code: str) -> str:
    """What is kept to recognise the code."""
    return _digest(f"activation|{code}")


def new_customer_code() -> str:
    """The customer's short one-time code (8 digits: typed by hand, guessed at most
    MAX_CUSTOMER_CODE_ATTEMPTS times before activation locks)."""
    return f"{secrets.randbelow(10**8):08d}"


def customer_code_input(code: str, application_id: str) -> str:
    """What the keyed hash is taken of: the code bound to its application."""
    return f"activation-customer-code|{application_id}|{code.strip()}"


def username_for(applicant: ApplicantData, application_id: str) -> str:
    """The bank's login name for the new customer: the name's letters and part of the id."""
    stem = ".".join(
        normalise_name(applicant.given_name).split()[:1] + normalise_name(applicant.family_name).split()[:1]
    )
    stem = re.sub(r"[^a-z.]", "", stem)[:40] or "customer"
    return f"{stem}.{application_id[:8]}"
