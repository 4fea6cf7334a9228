"""The ledger's domain rules, without a database or gRPC."""

from __future__ import annotations

import datetime as dt

import pytest

from meshlib.errors import FailedPrecondition, InvalidArgument
from meshlib.money import Amount
from services.account.domain.ledger import (
    Account,
    AccountStatus,
    AccountType,
    Direction,
    EntryStatus,
    OpenAccountCommand,
    Transfer,
    TransferRequest,
    TransferState,
    TransferType,
    create_transfer,
    expire_transfer,
    mask_account_number,
    new_account,
    post_transfer,
    void_transfer,
)
from tests.unit.account.samples import sample_account

NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


def account(
    account_id: str,
    *,
    balance: int = 0,
    overdraft: int = 0,
    currency: str = "EUR",
    account_type: AccountType = AccountType.CURRENT,
    status: AccountStatus = AccountStatus.ACTIVE,
) -> Account:
    return sample_account(
        account_id,
        at=NOW,
        balance=balance,
        overdraft_limit=overdraft,
        currency=currency,
        type=account_type,
        status=status,
    )


def request(
    amount: int,
    *,
    transfer_id: str = "t1",
    debit: str = "a",
    credit: str = "b",
    currency: str = "EUR",
    pending: bool = False,
    timeout: dt.timedelta | None = None,
) -> TransferRequest:
    return TransferRequest(
        transfer_id=transfer_id,
        debit_account_id=debit,
        credit_account_id=credit,
        amount=Amount(currency, amount),
        type=TransferType.PENDING if pending else TransferType.SINGLE_PHASE,
        timeout=timeout if timeout is not None else (dt.timedelta(seconds=30) if pending else None),
    )


def reason(error: pytest.ExceptionInfo[Exception]) -> str:
    return error.value.reason  # type: ignore[attr-defined]


def test_display_number_shows_only_the_last_four_digits() -> None:
    assert mask_account_number("12345678901234") == "••••1234"
    a = account("a")
    assert a.display_number == "••••1234"
    assert "12345678901234" not in repr(a)


def test_single_phase_posts_at_once_and_books_both_sides() -> None:
    a, b = account("a", balance=100), account("b")
    outcome = create_transfer(request(60), a, b, NOW)
    assert outcome.transfer.state is TransferState.POSTED
    assert (a.current, a.available, b.current) == (40, 40, 60)
    assert [(e.account_id, e.direction, e.status, e.seq) for e in outcome.new_entries] == [
        ("a", Direction.DEBIT, EntryStatus.BOOKED, 1),
        ("b", Direction.CREDIT, EntryStatus.BOOKED, 1),
    ]


def test_pending_holds_then_post_moves_the_full_amount() -> None:
    a, b = account("a", balance=100), account("b")
    hold = create_transfer(request(70, pending=True), a, b, NOW).transfer
    assert hold.state is TransferState.PENDING and hold.expires_at == NOW + dt.timedelta(seconds=30)
    assert (a.current, a.debits_pending, a.available, b.credits_pending, b.available) == (100, 70, 30, 70, 0)
    outcome = post_transfer(hold, a, b, NOW)
    assert outcome.drop_pending_entries and hold.state is TransferState.POSTED
    assert (a.current, a.debits_pending, b.current, b.credits_pending) == (30, 0, 70, 0)


def test_void_releases_the_hold_even_on_a_frozen_account() -> None:
    a, b = account("a", balance=100), account("b")
    hold = create_transfer(request(70, pending=True), a, b, NOW).transfer
    a.freeze(NOW)
    void_transfer(hold, a, b, NOW)
    assert hold.state is TransferState.VOIDED and (a.debits_pending, a.current, b.credits_pending) == (0, 100, 0)


def test_available_includes_the_overdraft_and_refuses_beyond_it() -> None:
    a, b = account("a", balance=10, overdraft=50), account("b")
    create_transfer(request(60), a, b, NOW)
    assert (a.current, a.available) == (-50, 0)
    with pytest.raises(FailedPrecondition) as caught:
        create_transfer(request(1, transfer_id="t2"), a, b, NOW)
    assert reason(caught) == "INSUFFICIENT_FUNDS"


def test_a_refused_transfer_touches_nothing() -> None:
    a, b = account("a", balance=10), account("b")
    before = (a.debits_posted, a.debits_pending, a.last_entry_seq, b.credits_posted, b.last_entry_seq)
    with pytest.raises(FailedPrecondition):
        create_transfer(request(11), a, b, NOW)
    assert (a.debits_posted, a.debits_pending, a.last_entry_seq, b.credits_posted, b.last_entry_seq) == before


def test_the_bank_equity_account_may_go_negative() -> None:
    equity, b = account("a", account_type=AccountType.BANK_EQUITY), account("b")
    create_transfer(request(1_000_000), equity, b, NOW)
    assert equity.current == -1_000_000


def test_settlement_accounts_are_limited_like_any_other() -> None:
    settlement = account("a", account_type=AccountType.SETTLEMENT, overdraft=100)
    create_transfer(request(100), settlement, account("b"), NOW)
    with pytest.raises(FailedPrecondition) as caught:
        create_transfer(request(1, transfer_id="t2"), settlement, account("b"), NOW)
    assert reason(caught) == "INSUFFICIENT_FUNDS"


@pytest.mark.parametrize(
    ("debit", "credit", "ask", "expected"),
    [
        (account("a", balance=5), account("a"), request(1, credit="a"), "SAME_ACCOUNT"),
        (account("a", balance=5), account("b", currency="USD"), request(1), "CURRENCY_MISMATCH"),
        (account("a", balance=5), account("b"), request(1, currency="USD"), "CURRENCY_MISMATCH"),
        (account("a", balance=5, status=AccountStatus.FROZEN), account("b"), request(1), "ACCOUNT_NOT_ACTIVE"),
        (account("a", balance=5), account("b", status=AccountStatus.CLOSED), request(1), "ACCOUNT_NOT_ACTIVE"),
        (account("a", balance=5), account("b"), request(6), "INSUFFICIENT_FUNDS"),
        (account("a", balance=5), account("b"), request(0), "FIELD_INVALID"),
    ],
)
def test_create_transfer_refusals(debit: Account, credit: Account, ask: TransferRequest, expected: str) -> None:
    with pytest.raises((FailedPrecondition, InvalidArgument)) as caught:
        create_transfer(ask, debit, credit, NOW)
    assert reason(caught) == expected


@pytest.mark.parametrize(
    "ask",
    [
        request(1, pending=True, timeout=dt.timedelta(milliseconds=500)),
        request(1, pending=True, timeout=dt.timedelta(days=8)),
        TransferRequest("t", "a", "b", Amount("EUR", 1), TransferType.SINGLE_PHASE, dt.timedelta(seconds=5)),
        TransferRequest("t", "a", "b", Amount("EUR", 1), TransferType.PENDING, None),
        TransferRequest("t", "a", "b", Amount("EUR", 1), TransferType.SINGLE_PHASE, reference="x" * 129),
    ],
)
def test_request_shape_is_checked(ask: TransferRequest) -> None:
    with pytest.raises(InvalidArgument):
        ask.validate()


def _hold(a: Account, b: Account) -> Transfer:
    return create_transfer(request(10, pending=True), a, b, NOW).transfer


def test_state_errors_after_post_void_and_expiry() -> None:
    a, b = account("a", balance=100), account("b")
    posted = _hold(a, b)
    post_transfer(posted, a, b, NOW)
    for rule in (post_transfer, void_transfer):
        with pytest.raises(FailedPrecondition) as caught:
            rule(posted, a, b, NOW)
        assert reason(caught) == "TRANSFER_ALREADY_POSTED"
    voided = _hold(a, b)
    void_transfer(voided, a, b, NOW)
    for rule in (post_transfer, void_transfer):
        with pytest.raises(FailedPrecondition) as caught:
            rule(voided, a, b, NOW)
        assert reason(caught) == "TRANSFER_ALREADY_VOIDED"
    late = NOW + dt.timedelta(seconds=31)
    expiring = _hold(a, b)
    with pytest.raises(FailedPrecondition) as caught:
        post_transfer(expiring, a, b, late)
    assert reason(caught) == "TRANSFER_EXPIRED"
    expire_transfer(expiring, a, b, late)
    assert expiring.state is TransferState.EXPIRED and a.debits_pending == 0
    for rule in (post_transfer, void_transfer):
        with pytest.raises(FailedPrecondition) as caught:
            rule(expiring, a, b, late)
        assert reason(caught) == "TRANSFER_EXPIRED"
    single = create_transfer(request(1, transfer_id="s"), a, b, NOW).transfer
    with pytest.raises(FailedPrecondition) as caught:
        post_transfer(single, a, b, NOW)
    assert reason(caught) == "TRANSFER_NOT_PENDING"


def test_posting_needs_active_accounts() -> None:
    a, b = account("a", balance=100), account("b")
    hold = _hold(a, b)
    b.freeze(NOW)
    with pytest.raises(FailedPrecondition) as caught:
        post_transfer(hold, a, b, NOW)
    assert reason(caught) == "ACCOUNT_NOT_ACTIVE" and hold.state is TransferState.PENDING


def test_replay_matching_and_snapshots() -> None:
    a, b = account("a", balance=100), account("b")
    ask = request(10, pending=True)
    transfer = create_transfer(ask, a, b, NOW).transfer
    assert transfer.matches(ask)
    assert not transfer.matches(request(11, pending=True))
    assert not transfer.matches(request(10, pending=True, timeout=dt.timedelta(seconds=31)))
    assert Transfer.from_dict(transfer.to_dict()) == transfer
    restored = Account.from_snapshot(a.snapshot())
    assert (restored.id, restored.display_number, restored.status) == (a.id, a.display_number, a.status)


def test_account_state_transitions() -> None:
    a = account("a")
    a.freeze(NOW)
    assert a.available == 0
    with pytest.raises(FailedPrecondition) as caught:
        a.freeze(NOW)
    assert reason(caught) == "INVALID_STATE_TRANSITION"
    a.unfreeze(NOW)
    a.close(NOW)
    assert a.status is AccountStatus.CLOSED
    funded = account("b", balance=1)
    with pytest.raises(FailedPrecondition):
        funded.close(NOW)
    with pytest.raises(FailedPrecondition):
        account("e", account_type=AccountType.BANK_EQUITY).close(NOW)


def test_open_account_command_validation() -> None:
    def command(**changes: object) -> OpenAccountCommand:
        fields: dict[str, object] = dict(
            request_id="r",
            customer_id="c1",
            currency="EUR",
            type=AccountType.CURRENT,
            overdraft_limit=None,
            display_name="",
        )
        fields.update(changes)
        return OpenAccountCommand(**fields)  # type: ignore[arg-type]

    command().validate()
    for bad in (
        command(currency="XXX"),
        command(type=None),
        command(customer_id=None),
        command(type=AccountType.SETTLEMENT),
        command(overdraft_limit=Amount("EUR", -1)),
    ):
        with pytest.raises(InvalidArgument) as caught:
            bad.validate()
        assert reason(caught) == "FIELD_INVALID"
    with pytest.raises(InvalidArgument) as caught:
        command(overdraft_limit=Amount("USD", 5)).validate()
    assert reason(caught) == "CURRENCY_MISMATCH"
    opened = new_account(command(overdraft_limit=Amount("EUR", 5)), "id1", NOW)
    assert (opened.status, opened.overdraft_limit, len(opened.number)) == (AccountStatus.ACTIVE, 5, 14)
