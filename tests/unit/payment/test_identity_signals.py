"""Identity's risk signals behind payment's port, with fakes: the failed sign-ins (asked each
time, or remembered per customer for a while), the consent's last change from the consent
lookup, and the consent message's change time as the lookup reads it."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import timestamp_pb2

from meshlib.auth.consent import ConsentView
from meshlib.auth.consent_client import consent_view
from meshlib.errors import NotFound, Unavailable
from openbank.identity.v1 import consent_pb2
from services.payment.adapters.identity_signals import (
    BoundedIdentitySignals,
    CachedFailedSignIns,
    IdentityRiskSignalsAdapter,
)
from services.payment.domain.risk import IdentitySignals

NOW = dt.datetime(2026, 12, 7, 20, 0, tzinfo=dt.UTC)


class _Identity:
    """Identity's failed sign-ins per customer; counts the calls; may be down."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.calls = 0
        self.down = False

    async def count(self, customer_id: str) -> int:
        self.calls += 1
        if self.down:
            raise Unavailable("identity is down")
        return self.counts.get(customer_id, 0)


class _Consents:
    def __init__(self, views: dict[str, ConsentView]) -> None:
        self.views = views

    async def get(self, consent_id: str, *, partner_id: str) -> ConsentView:
        raise AssertionError("the signals read the consent as the customer's")

    async def get_of_customer(self, consent_id: str, *, customer_id: str) -> ConsentView:
        view = self.views.get(consent_id)
        if view is None or view.customer_id != customer_id:
            raise NotFound("consent not found")
        return view


def _view(consent_id: str, customer_id: str, changed_at: dt.datetime | None) -> ConsentView:
    return ConsentView(
        consent_id, "p1", customer_id, "AUTHORISED", False, frozenset(), frozenset(), None, changed_at=changed_at
    )


async def test_the_signals_are_identity_s_failed_sign_ins_and_how_long_ago_the_consent_changed() -> None:
    identity = _Identity({"alice": 4})
    consents = _Consents(
        {
            "c-changed": _view("c-changed", "alice", NOW - dt.timedelta(seconds=90)),
            "c-unchanged": _view("c-unchanged", "bob", None),
        }
    )
    signals = IdentityRiskSignalsAdapter(identity, consents, clock=lambda: NOW)
    assert await signals.recent("alice", "c-changed") == IdentitySignals(4, 90.0)
    assert await signals.recent("bob", "c-unchanged") == IdentitySignals(0, None)
    with pytest.raises(NotFound):  # another customer's consent is none of this one's business
        await signals.recent("alice", "c-unchanged")


async def test_failed_sign_ins_are_remembered_per_customer_for_the_ttl_and_a_failure_is_not() -> None:
    now = [0.0]
    identity = _Identity({"alice": 1, "bob": 0})
    cached = CachedFailedSignIns(identity, ttl_seconds=5.0, clock=lambda: now[0])
    assert (await cached.count("alice"), await cached.count("alice"), await cached.count("bob")) == (1, 1, 0)
    assert identity.calls == 2  # one per customer
    identity.counts["alice"] = 3  # she fails twice more
    now[0] = 6.0  # past the TTL: asked again
    assert await cached.count("alice") == 3
    identity.down = True
    now[0] = 20.0
    with pytest.raises(Unavailable):
        await cached.count("alice")
    identity.down = False
    identity.counts["alice"] = 0
    assert await cached.count("alice") == 0  # the failure was not remembered


async def test_identity_down_decides_the_payment_without_its_signals() -> None:
    identity = _Identity({"alice": 9})
    identity.down = True
    consents = _Consents({"c1": _view("c1", "alice", NOW)})
    bounded = BoundedIdentitySignals(IdentityRiskSignalsAdapter(identity, consents, clock=lambda: NOW), 1.0)
    assert await bounded.recent("alice", "c1") == IdentitySignals()  # unknown: no rule fires on it
    assert bounded.misses == 1


def _stamp(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def test_the_consent_lookup_reads_a_change_after_authorisation_and_not_the_authorisation_itself() -> None:
    authorised = consent_pb2.Consent(
        name="consents/c1",
        partner="partners/p1",
        customer="customers/alice",
        state=consent_pb2.CONSENT_STATE_AUTHORISED,
        authorise_time=_stamp(NOW),
        update_time=_stamp(NOW),
    )
    assert consent_view(authorised).changed_at is None
    paused = consent_pb2.Consent()
    paused.CopyFrom(authorised)
    paused.update_time.CopyFrom(_stamp(NOW + dt.timedelta(minutes=3)))
    assert consent_view(paused).changed_at == NOW + dt.timedelta(minutes=3)
    assert consent_view(consent_pb2.Consent(name="consents/c2", partner="partners/p1")).changed_at is None
