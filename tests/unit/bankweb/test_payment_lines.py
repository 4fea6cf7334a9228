"""The dashboard's payments of a consent, read from payment's audit trail: a refused request
(the risk rules', dynamic isolation's) made no payment and is not listed as one."""

from __future__ import annotations

import datetime as dt
import json

from google.protobuf import timestamp_pb2

from bankweb.grpc_bank import payment_lines
from openbank.common.v1 import audit_pb2


def _record(payment: str, action: str, outcome: str, at: dt.datetime) -> audit_pb2.AuditRecord:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(at)
    details = json.dumps({"currency": "EUR", "amount_minor": 1250})
    return audit_pb2.AuditRecord(
        payment=payment, action=action, outcome=outcome, occur_time=stamp, details_json=details
    )


def test_refused_requests_are_not_payments() -> None:
    now = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)
    lines = payment_lines(
        [
            _record("", "payment.isolation_refuse", "REFUSED", now),
            _record("p1", "payment.state", "SETTLED", now - dt.timedelta(seconds=1)),
            _record("", "payment.risk_refuse", "REFUSED", now - dt.timedelta(seconds=2)),
            _record("p1", "payment.create", "ACCEPTED", now - dt.timedelta(seconds=3)),
        ]
    )
    assert [(line.payment, line.amount) for line in lines] == [("payments/p1", "EUR 12.50")]
