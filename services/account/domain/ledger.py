"""The double-entry ledger's rules: plain Python, no database, no gRPC.

TigerBeetle's model: an account keeps four running totals (posted and pending debits
and credits); a transfer debits one account and credits another by the same positive
amount in one currency. A single-phase transfer posts at once; a pending transfer holds
its amount (pending totals) until it is posted, voided, or expires. Every rule checks
everything first and mutates only afterwards, so a refused transfer leaves both accounts
untouched (the batch rpc relies on that).
"""

from __future__ import annotations

import datetime as dt
import enum
import secrets
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from meshlib.errors import FailedPrecondition, FieldCollector, InvalidArgument
from meshlib.money import MAX_MINOR_UNITS, Amount, validate_currency

MIN_HOLD_TIMEOUT = dt.timedelta(seconds=1)
MAX_HOLD_TIMEOUT = dt.timedelta(days=7)
MAX_REFERENCE_LENGTH = 128
MAX_DESCRIPTION_LENGTH = 140
ACCOUNT_NUMBER_DIGITS = 14
MASK = "••••"
_MICROSECOND = dt.timedelta(microseconds=1)


class AccountType(enum.Enum):
    """Kind of account."""

    CURRENT = "CURRENT"
    SAVINGS = "SAVINGS"
    SETTLEMENT = "SETTLEMENT"
    BANK_EQUITY = "BANK_EQUITY"
    # Credited with the interest of credit lines (services/account/credit_service.py).
    INTEREST_INCOME = "INTEREST_INCOME"

    @property
    def is_customer(self) -> bool:
        """Current and savings accounts belong to a customer; the others to the bank."""
        return self in (AccountType.CURRENT, AccountType.SAVINGS)


class AccountStatus(enum.Enum):
    """Whether an account may be debited or credited."""

    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


class TransferType(enum.Enum):
    """Single-phase (posted at once) or pending (a hold)."""

    SINGLE_PHASE = "SINGLE_PHASE"
    PENDING = "PENDING"


class TransferState(enum.Enum):
    """Lifecycle of a transfer; everything but PENDING is final."""

    PENDING = "PENDING"
    POSTED = "POSTED"
    VOIDED = "VOIDED"
    EXPIRED = "EXPIRED"


class Direction(enum.Enum):
    """Money into (CREDIT) or out of (DEBIT) an account, seen from that account."""

    CREDIT = "CREDIT"
    DEBIT = "DEBIT"


class EntryStatus(enum.Enum):
    """A statement line is booked (posted) or pending (a hold)."""

    BOOKED = "BOOKED"
    PENDING = "PENDING"


def new_account_number() -> str:
    """A random account number; it is stored, but only its masked form ever leaves the service."""
    return "".join(secrets.choice("0123456789") for _ in range(ACCOUNT_NUMBER_DIGITS))


def mask_account_number(number: str) -> str:
    """The display form: only the last four digits, e.g. "••••1234"."""
    return MASK + number[-4:]


@dataclass(slots=True)
class Account:
    """A ledger account with its running totals (all amounts in minor units of ``currency``)."""

    id: str
    number: str = field(repr=False)  # the full number: never logged, never returned
    currency: str
    type: AccountType
    status: AccountStatus
    overdraft_limit: int
    customer_id: str | None
    display_name: str
    opened_at: dt.datetime
    updated_at: dt.datetime
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0
    # Sequence of the last statement entry; entries are numbered per account under its lock.
    last_entry_seq: int = 0

    @property
    def display_number(self) -> str:
        """The masked account number."""
        return mask_account_number(self.number)

    @property
    def current(self) -> int:
        """Booked balance: posted credits minus posted debits (negative within an overdraft)."""
        return self.credits_posted - self.debits_posted

    @property
    def spendable(self) -> int:
        """What the account's limit still allows to debit: current - held + overdraft."""
        return self.current - self.debits_pending + self.overdraft_limit

    @property
    def available(self) -> int:
        """The available balance shown to customers: zero unless the account is active."""
        return self.spendable if self.status is AccountStatus.ACTIVE else 0

    @property
    def unlimited_debits(self) -> bool:
        """The bank equity account is where money enters the ledger: it may go as negative as needed."""
        return self.type is AccountType.BANK_EQUITY

    def can_debit(self, amount: int) -> bool:
        """True when debiting ``amount`` (posted or held) keeps the account within its limit."""
        return self.unlimited_debits or self.spendable >= amount

    def require_active(self) -> None:
        """FAILED_PRECONDITION ACCOUNT_NOT_ACTIVE unless the account is active."""
        if self.status is not AccountStatus.ACTIVE:
            raise FailedPrecondition(
                "the account is not active", reason="ACCOUNT_NOT_ACTIVE", metadata={"account": f"accounts/{self.id}"}
            )

    def freeze(self, now: dt.datetime) -> None:
        """ACTIVE -> FROZEN."""
        if self.status is not AccountStatus.ACTIVE:
            raise _invalid_transition(self, "only an active account can be frozen")
        self.status = AccountStatus.FROZEN
        self.updated_at = now

    def unfreeze(self, now: dt.datetime) -> None:
        """FROZEN -> ACTIVE."""
        if self.status is not AccountStatus.FROZEN:
            raise _invalid_transition(self, "only a frozen account can be unfrozen")
        self.status = AccountStatus.ACTIVE
        self.updated_at = now

    def close(self, now: dt.datetime) -> None:
        """-> CLOSED, only with a zero balance, no hold, and never for the bank equity account."""
        if self.status is AccountStatus.CLOSED:
            raise _invalid_transition(self, "the account is already closed")
        if self.type is AccountType.BANK_EQUITY:
            raise _invalid_transition(self, "the bank equity account cannot be closed")
        if self.current != 0 or self.debits_pending or self.credits_pending:
            raise _invalid_transition(self, "only an account with a zero balance and no pending transfer can close")
        self.status = AccountStatus.CLOSED
        self.updated_at = now

    def next_entry_seq(self) -> int:
        """Allocate the next statement sequence number (the caller holds the account's lock)."""
        self.last_entry_seq += 1
        return self.last_entry_seq

    def snapshot(self) -> dict[str, Any]:
        """The account's descriptive fields, JSON-ready (saved as an idempotent answer)."""
        return {
            "id": self.id,
            "number": self.number,
            "currency": self.currency,
            "type": self.type.value,
            "status": self.status.value,
            "overdraft_limit": self.overdraft_limit,
            "customer_id": self.customer_id,
            "display_name": self.display_name,
            "opened_at": self.opened_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> Account:
        """The inverse of :meth:`snapshot` (totals are not part of it)."""
        return cls(
            id=data["id"],
            number=data["number"],
            currency=data["currency"],
            type=AccountType(data["type"]),
            status=AccountStatus(data["status"]),
            overdraft_limit=data["overdraft_limit"],
            customer_id=data["customer_id"],
            display_name=data["display_name"],
            opened_at=dt.datetime.fromisoformat(data["opened_at"]),
            updated_at=dt.datetime.fromisoformat(data["updated_at"]),
        )


def bank_account(account_id: str, currency: str, type: AccountType, display_name: str, now: dt.datetime) -> Account:
    """One of the bank's own accounts (equity, interest income): active, no customer, no limit."""
    return Account(
        id=account_id,
        number=new_account_number(),
        currency=currency,
        type=type,
        status=AccountStatus.ACTIVE,
        overdraft_limit=0,
        customer_id=None,
        display_name=display_name,
        opened_at=now,
        updated_at=now,
    )


def _invalid_transition(account: Account, message: str) -> FailedPrecondition:
    return FailedPrecondition(message, reason="INVALID_STATE_TRANSITION", metadata={"state": account.status.value})


@dataclass(frozen=True)
class OpenAccountCommand:
    """What OpenAccount asks for, validated by :meth:`validate`."""

    request_id: str
    customer_id: str | None
    currency: str
    type: AccountType | None
    overdraft_limit: Amount | None
    display_name: str

    def validate(self) -> None:
        """INVALID_ARGUMENT naming every bad field; CURRENCY_MISMATCH for an overdraft in another currency."""
        errors = FieldCollector()
        validate_currency(self.currency, "currency_code", errors)
        if self.type is None:
            errors.add("type", "required")
        elif self.type.is_customer and not self.customer_id:
            errors.add("customer", "required for current and savings accounts")
        elif not self.type.is_customer and self.customer_id:
            errors.add("customer", "must be empty for bank and settlement accounts")
        if self.overdraft_limit is not None:
            if self.overdraft_limit.minor_units < 0:
                errors.add("overdraft_limit.minor_units", "must not be negative")
            elif self.overdraft_limit.minor_units > MAX_MINOR_UNITS:
                errors.add("overdraft_limit.minor_units", f"must be at most {MAX_MINOR_UNITS}")
        if len(self.display_name) > 100:
            errors.add("display_name", "at most 100 characters")
        errors.raise_if_any()
        if self.overdraft_limit is not None and self.overdraft_limit.currency != self.currency:
            raise InvalidArgument.field(
                "overdraft_limit.currency_code", "must be the account's currency", reason="CURRENCY_MISMATCH"
            )


def new_account(command: OpenAccountCommand, account_id: str, now: dt.datetime) -> Account:
    """A fresh, active account with zero totals."""
    assert command.type is not None
    return Account(
        id=account_id,
        number=new_account_number(),
        currency=command.currency,
        type=command.type,
        status=AccountStatus.ACTIVE,
        overdraft_limit=command.overdraft_limit.minor_units if command.overdraft_limit else 0,
        customer_id=command.customer_id or None,
        display_name=command.display_name,
        opened_at=now,
        updated_at=now,
    )


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """What a client asks a transfer to be; the transfer id is its request_id (TigerBeetle's id)."""

    transfer_id: str
    debit_account_id: str
    credit_account_id: str
    amount: Amount
    type: TransferType
    timeout: dt.timedelta | None = None
    reference: str = ""
    description: str = ""

    def validate(self) -> None:
        """Shape checks that need no account: amount, timeout, lengths, same account."""
        errors = FieldCollector()
        if self.amount.minor_units <= 0:
            errors.add("amount.minor_units", "must be greater than zero")
        elif self.amount.minor_units > MAX_MINOR_UNITS:
            errors.add("amount.minor_units", f"must be at most {MAX_MINOR_UNITS}")
        if self.type is TransferType.PENDING:
            if self.timeout is None:
                errors.add("timeout", "required for a pending transfer")
            elif not MIN_HOLD_TIMEOUT <= self.timeout <= MAX_HOLD_TIMEOUT:
                errors.add("timeout", "must be between 1 second and 7 days")
        elif self.timeout is not None:
            errors.add("timeout", "must be unset for a single-phase transfer")
        if len(self.reference) > MAX_REFERENCE_LENGTH:
            errors.add("reference", f"at most {MAX_REFERENCE_LENGTH} characters")
        if len(self.description) > MAX_DESCRIPTION_LENGTH:
            errors.add("description", f"at most {MAX_DESCRIPTION_LENGTH} characters")
        errors.raise_if_any()
        if self.debit_account_id == self.credit_account_id:
            raise InvalidArgument.field("credit_account", "must not be the debit account", reason="SAME_ACCOUNT")


@dataclass(slots=True)
class Transfer:
    """A transfer as the ledger keeps it."""

    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    type: TransferType
    state: TransferState
    timeout: dt.timedelta | None
    expires_at: dt.datetime | None
    reference: str
    description: str
    created_at: dt.datetime
    updated_at: dt.datetime

    def matches(self, request: TransferRequest) -> bool:
        """True when ``request`` asks for exactly this transfer (an idempotent replay)."""
        return (
            self.debit_account_id == request.debit_account_id
            and self.credit_account_id == request.credit_account_id
            and self.amount == request.amount.minor_units
            and self.currency == request.amount.currency
            and self.type is request.type
            and self.timeout == request.timeout
            and self.reference == request.reference
            and self.description == request.description
        )

    def is_due_to_expire(self, now: dt.datetime) -> bool:
        """A pending hold whose timeout has elapsed (not yet released)."""
        return self.state is TransferState.PENDING and self.expires_at is not None and self.expires_at <= now

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot (saved as an idempotent answer)."""
        return {
            "id": self.id,
            "debit_account_id": self.debit_account_id,
            "credit_account_id": self.credit_account_id,
            "amount": self.amount,
            "currency": self.currency,
            # ``_value_`` is the member's value without the ``value`` property's descriptor call
            # (a batch's saved answer serialises 500 of these).
            "type": self.type._value_,
            "state": self.state._value_,
            "timeout_us": None if self.timeout is None else self.timeout // _MICROSECOND,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "reference": self.reference,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transfer:
        """The inverse of :meth:`to_dict`."""
        return cls(
            id=data["id"],
            debit_account_id=data["debit_account_id"],
            credit_account_id=data["credit_account_id"],
            amount=data["amount"],
            currency=data["currency"],
            type=TransferType(data["type"]),
            state=TransferState(data["state"]),
            timeout=None if data["timeout_us"] is None else dt.timedelta(microseconds=data["timeout_us"]),
            expires_at=dt.datetime.fromisoformat(data["expires_at"]) if data["expires_at"] else None,
            reference=data["reference"],
            description=data["description"],
            created_at=dt.datetime.fromisoformat(data["created_at"]),
            updated_at=dt.datetime.fromisoformat(data["updated_at"]),
        )


class Entry(NamedTuple):
    """One statement line: one side of a transfer, seen from one account.

    Immutable like a frozen dataclass, but a batch builds 1,000 of them: a named tuple is
    built in a third of the time and is one object (no instance dict).
    """

    account_id: str
    seq: int
    transfer_id: str
    direction: Direction
    amount: int
    currency: str
    status: EntryStatus
    booking_time: dt.datetime
    reference: str
    description: str


def _entry(account: Account, transfer: Transfer, direction: Direction, status: EntryStatus, now: dt.datetime) -> Entry:
    return Entry(
        account_id=account.id,
        seq=account.next_entry_seq(),
        transfer_id=transfer.id,
        direction=direction,
        amount=transfer.amount,
        currency=transfer.currency,
        status=status,
        booking_time=now,
        reference=transfer.reference,
        description=transfer.description,
    )


@dataclass(slots=True)
class Outcome:
    """What a ledger rule changed: the transfer, new statement entries, and whether holds were dropped."""

    transfer: Transfer
    new_entries: list[Entry] = field(default_factory=list)
    drop_pending_entries: bool = False


def new_transfer(request: TransferRequest, now: dt.datetime) -> Transfer:
    """The transfer an accepted ``request`` becomes at ``now`` (its currency is the accounts')."""
    pending = request.type is TransferType.PENDING
    return Transfer(
        id=request.transfer_id,
        debit_account_id=request.debit_account_id,
        credit_account_id=request.credit_account_id,
        amount=request.amount.minor_units,
        currency=request.amount.currency,
        type=request.type,
        state=TransferState.PENDING if pending else TransferState.POSTED,
        timeout=request.timeout,
        expires_at=now + request.timeout if pending and request.timeout else None,
        reference=request.reference,
        description=request.description,
        created_at=now,
        updated_at=now,
    )


def create_transfer(
    request: TransferRequest, debit: Account, credit: Account, now: dt.datetime, *, validated: bool = False
) -> Outcome:
    """Apply a new transfer to both accounts, or refuse it without touching either.

    Checks, in order: the request's shape (unless the caller already ran
    :meth:`TransferRequest.validate`: ``validated``), currencies (CURRENCY_MISMATCH), both
    accounts active (ACCOUNT_NOT_ACTIVE), the debit account's limit (INSUFFICIENT_FUNDS).
    """
    if not validated:
        request.validate()
    amount = request.amount.minor_units
    if debit.currency != credit.currency:
        raise InvalidArgument.field(
            "credit_account", "the two accounts have different currencies", reason="CURRENCY_MISMATCH"
        )
    if request.amount.currency != debit.currency:
        raise InvalidArgument.field(
            "amount.currency_code", "must be the accounts' currency", reason="CURRENCY_MISMATCH"
        )
    debit.require_active()
    credit.require_active()
    if not debit.can_debit(amount):
        raise FailedPrecondition(
            "the debit account's available balance does not cover the amount",
            reason="INSUFFICIENT_FUNDS",
            metadata={"account": f"accounts/{debit.id}"},
        )
    transfer = new_transfer(request, now)
    pending = transfer.state is TransferState.PENDING
    if pending:
        debit.debits_pending += amount
        credit.credits_pending += amount
        status = EntryStatus.PENDING
    else:
        debit.debits_posted += amount
        credit.credits_posted += amount
        status = EntryStatus.BOOKED
    debit.updated_at = credit.updated_at = now
    return Outcome(
        transfer,
        [
            _entry(debit, transfer, Direction.DEBIT, status, now),
            _entry(credit, transfer, Direction.CREDIT, status, now),
        ],
    )


def _require_pending(transfer: Transfer) -> None:
    if transfer.type is not TransferType.PENDING:
        raise FailedPrecondition("the transfer is not a pending transfer", reason="TRANSFER_NOT_PENDING")
    if transfer.state is TransferState.POSTED:
        raise FailedPrecondition("the transfer was already posted", reason="TRANSFER_ALREADY_POSTED")
    if transfer.state is TransferState.VOIDED:
        raise FailedPrecondition("the transfer was already voided", reason="TRANSFER_ALREADY_VOIDED")
    if transfer.state is TransferState.EXPIRED:
        raise FailedPrecondition("the hold expired and was released", reason="TRANSFER_EXPIRED")


def _check_sides(transfer: Transfer, debit: Account, credit: Account) -> None:
    if debit.id != transfer.debit_account_id or credit.id != transfer.credit_account_id:
        raise ValueError("accounts do not belong to the transfer")


def _release(transfer: Transfer, debit: Account, credit: Account, now: dt.datetime) -> None:
    debit.debits_pending -= transfer.amount
    credit.credits_pending -= transfer.amount
    debit.updated_at = credit.updated_at = now
    transfer.updated_at = now


def post_transfer(transfer: Transfer, debit: Account, credit: Account, now: dt.datetime) -> Outcome:
    """Move a hold's full amount from pending to posted (both accounts must be active)."""
    _check_sides(transfer, debit, credit)
    _require_pending(transfer)
    if transfer.is_due_to_expire(now):
        raise FailedPrecondition("the hold expired and was released", reason="TRANSFER_EXPIRED")
    debit.require_active()
    credit.require_active()
    _release(transfer, debit, credit, now)
    debit.debits_posted += transfer.amount
    credit.credits_posted += transfer.amount
    transfer.state = TransferState.POSTED
    return Outcome(
        transfer,
        [
            _entry(debit, transfer, Direction.DEBIT, EntryStatus.BOOKED, now),
            _entry(credit, transfer, Direction.CREDIT, EntryStatus.BOOKED, now),
        ],
        drop_pending_entries=True,
    )


def void_transfer(transfer: Transfer, debit: Account, credit: Account, now: dt.datetime) -> Outcome:
    """Release a hold (allowed on frozen accounts: it only gives money back)."""
    _check_sides(transfer, debit, credit)
    _require_pending(transfer)
    if transfer.is_due_to_expire(now):
        raise FailedPrecondition("the hold expired and was released", reason="TRANSFER_EXPIRED")
    _release(transfer, debit, credit, now)
    transfer.state = TransferState.VOIDED
    return Outcome(transfer, drop_pending_entries=True)


def expire_transfer(transfer: Transfer, debit: Account, credit: Account, now: dt.datetime) -> Outcome:
    """Release a hold whose timeout has elapsed (state EXPIRED)."""
    _check_sides(transfer, debit, credit)
    if not transfer.is_due_to_expire(now):
        raise ValueError("the transfer is not due to expire")
    _release(transfer, debit, credit, now)
    transfer.state = TransferState.EXPIRED
    return Outcome(transfer, drop_pending_entries=True)
