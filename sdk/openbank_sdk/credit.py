"""The bank's credit line, offered in your app (openbank.credit.v1.CreditService), in a consent
session: the consent must grant CONSENT_PERMISSION_CREDIT over the account, and your partner
registration the scope ``credit:offer``.

Ask for an offer; the answer is the bank's decision: OFFERED (limit, rate, until when) with the
bank's page for the customer to accept it (``acceptance_uri``: send the customer's browser
there, never open it yourself), or REFUSED with its reason (not an error). Once accepted, the
offer names its line; read the line and its statement (what is owed, interest, repayments).
"""

from __future__ import annotations

from typing import Any

from openbank.common.v1 import consent_permission_pb2
from openbank.credit.v1 import credit_pb2

OFFERED = credit_pb2.CREDIT_OFFER_STATE_OFFERED
REFUSED = credit_pb2.CREDIT_OFFER_STATE_REFUSED
ACCEPTED = credit_pb2.CREDIT_OFFER_STATE_ACCEPTED
EXPIRED = credit_pb2.CREDIT_OFFER_STATE_EXPIRED
# The consent permission to ask for (with CreateConsent), beside READ_ACCOUNTS to find the account.
CREDIT = consent_permission_pb2.CONSENT_PERMISSION_CREDIT


class CreditCalls:
    """Mixed into :class:`openbank_sdk.ConsentSession` (its ``_call`` and ``_credit``)."""

    _credit: Any

    async def _call(self, method: Any, request: Any, *, mutating: bool = False) -> Any:
        raise NotImplementedError

    async def request_credit_offer(self, account: str, *, request_id: str = "") -> credit_pb2.CreditOffer:
        """The bank's decision on ``account`` (``accounts/{id}``): OFFERED or REFUSED.

        ``request_id`` defaults to a fresh key; pass your own to get the same decision back on
        a retry."""
        request = credit_pb2.RequestCreditOfferRequest(request_id=request_id, account=account)
        return (await self._call(self._credit.RequestCreditOffer, request, mutating=True)).credit_offer

    async def credit_offer(self, name: str) -> credit_pb2.CreditOffer:
        """An offer (``creditOffers/{id}``) in its current state."""
        request = credit_pb2.GetCreditOfferRequest(name=name)
        return (await self._call(self._credit.GetCreditOffer, request)).credit_offer

    async def credit_line(self, name: str) -> credit_pb2.CreditLine:
        """A line (``creditLines/{id}``): limit, rate, owed, interest charged, repaid."""
        return (await self._call(self._credit.GetCreditLine, credit_pb2.GetCreditLineRequest(name=name))).credit_line

    async def credit_statement(self, line: str) -> credit_pb2.GetCreditStatementResponse:
        """A line with its latest movements, newest first."""
        return await self._call(self._credit.GetCreditStatement, credit_pb2.GetCreditStatementRequest(credit_line=line))
