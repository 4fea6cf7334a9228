"""What the limits and velocity rules read: the running sums per day and the customers' histories."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.payment.domain.checks import CustomerHistory
from services.payment.domain.payments import Payment, PaymentState
from services.payment.repository import CUSTOMER_TOTALS as _TOTALS
from services.payment.repository import typed_param
from services.payment.tables import customer_totals, payments, spent_days

_c = payments.c
_t = customer_totals.c

_d = spent_days.c
_SPENT = sa.select(sa.func.coalesce(sa.func.sum(_d.amount_minor), 0)).where(
    _d.scope == typed_param("scope", _d.scope),
    _d.scope_id == typed_param("value", _d.scope_id),
    _d.currency == typed_param("cur", _d.currency),
    _d.day >= typed_param("since", _d.day),
)
SPENT_SCOPES = ("consent_id", "partner_id", "customer_id")
_WINDOWS: dict[int, sa.Select[Any]] = {}

_ONE, _ZERO = sa.literal_column("1"), sa.literal_column("0")


def _counting(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
    """How many of the selected rows meet ``condition`` (NULL when no row is selected)."""
    return sa.func.sum(sa.case((condition, _ONE), else_=_ZERO))


def _windows_statement(windows: int) -> sa.Select[Any]:
    """The customer's payments per window (``since_w{i}x``), over the longest window's rows only."""
    statement = _WINDOWS.get(windows)
    if statement is None:
        columns = [
            _counting(_c.created_at >= typed_param(f"since_w{index}x", _c.created_at)) for index in range(windows)
        ]
        statement = sa.select(*columns).where(
            _c.customer_id == typed_param("customer", _c.customer_id),
            _c.created_at >= typed_param("oldest", _c.created_at),
            _c.original_payment_id == "",  # refunds are not the customer's payments
        )
        _WINDOWS[windows] = statement
    return statement


def _paid_before(same_creditor: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """Whether a payment of the customer to the creditor settled: one index seek, not a scan."""
    return (
        sa.select(_ONE)
        .where(
            _c.customer_id == typed_param("customer", _c.customer_id),
            same_creditor,
            _c.state == PaymentState.SETTLED.name,
            _c.original_payment_id == "",
        )
        .limit(1)
    )


# How the creditor is matched: by account, by wallet partner, or a missing wallet partner (IS NULL).
_PAID_BEFORE = {
    "account": _paid_before(_c.creditor_account_id == typed_param("creditor", _c.creditor_account_id)),
    "wallet": _paid_before(_c.creditor_wallet_partner_id == typed_param("creditor", _c.creditor_wallet_partner_id)),
    "no wallet": _paid_before(_c.creditor_wallet_partner_id.is_(None)),
    "external": _paid_before(_c.creditor_scheme_account == typed_param("creditor", _c.creditor_scheme_account)),
}
_HISTORY: dict[tuple[int, str], sa.Select[Any]] = {}


def _history_statement(windows: int, creditor: str) -> sa.Select[Any]:
    """A customer's velocity history in one round trip: the running totals, the payments per
    window (``since_w{i}x``) and whether a payment to the creditor settled, as one row."""
    statement = _HISTORY.get((windows, creditor))
    if statement is None:
        columns: list[Any] = [
            _TOTALS.with_only_columns(_t.payments).scalar_subquery().label("payments"),
            _TOTALS.with_only_columns(_t.amount_minor).scalar_subquery().label("amount"),
            sa.exists(_PAID_BEFORE[creditor]).label("paid_before"),
        ]
        if windows:
            per_window = _windows_statement(windows).subquery()
            statement = sa.select(*columns, *per_window.c).select_from(per_window)
        else:
            statement = sa.select(*columns)
        _HISTORY[(windows, creditor)] = statement
    return statement


class LimitsRepository:
    """The running sums and histories the limits and velocity rules are checked against."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def spent(self, column: str, value: str, currency: str, since: dt.date) -> int:
        """Sum of the counted payments by ``column`` (consent_id, partner_id or customer_id) created on UTC day
        ``since`` or later: day rows of the running sums, not the payments."""
        if column not in SPENT_SCOPES:
            raise KeyError(column)
        total = await self._connection.scalar(
            _SPENT, {"scope": column, "value": value, "cur": currency, "since": since}
        )
        return int(total or 0)

    async def customer_history(
        self, customer_id: str, beneficiary: Payment, windows: set[int], now: dt.datetime
    ) -> CustomerHistory:
        """Counts and averages the velocity rules need, for the paying customer.

        Bounded work whatever the customer's history, in one statement: the counted payments'
        number and average from the running totals, the payments per window over the longest
        window's rows, and one index seek for a settled payment to the same creditor.
        """
        ordered = tuple(sorted(windows))
        params: dict[str, Any] = {"customer": customer_id, "cur": beneficiary.amount.currency}
        if ordered:
            params["oldest"] = now - dt.timedelta(seconds=ordered[-1])
            for index, seconds in enumerate(ordered):
                params[f"since_w{index}x"] = now - dt.timedelta(seconds=seconds)
        if beneficiary.external_creditor is not None:
            creditor, params["creditor"] = "external", beneficiary.external_creditor.account
        elif beneficiary.creditor_account_id:
            creditor, params["creditor"] = "account", beneficiary.creditor_account_id
        elif beneficiary.creditor_wallet_partner_id is not None:
            creditor, params["creditor"] = "wallet", beneficiary.creditor_wallet_partner_id
        else:
            creditor = "no wallet"  # compared with None: IS NULL
        row = (await self._connection.execute(_history_statement(len(ordered), creditor), params)).one()
        count, amount, paid_before = int(row[0] or 0), int(row[1] or 0), bool(row[2])
        by_window = {seconds: int(value or 0) for seconds, value in zip(ordered, row[3:], strict=True)}
        return CustomerHistory(
            payments_in_window={seconds: by_window.get(seconds, 0) for seconds in windows},
            paid_beneficiary_before=paid_before,
            average_amount_minor=amount / count if count else 0.0,
            history_count=count,
            total_amount_minor=amount,
        )
