"""Operator tiers: a higher tier includes the lower ones, nothing else implies anything."""

from __future__ import annotations

import datetime as dt

import pytest

from meshlib.auth.context import Caller
from meshlib.auth.scopes import effective_scopes
from meshlib.errors import PermissionDenied


def test_admin_includes_operate_and_monitor_operate_includes_monitor_only() -> None:
    assert effective_scopes({"settlement:admin"}) == {"settlement:admin", "settlement:operate", "settlement:monitor"}
    assert effective_scopes({"payments:operate"}) == {"payments:operate", "payments:monitor"}
    assert effective_scopes({"ledger:monitor"}) == {"ledger:monitor"}
    # No tier reaches another resource, and other scopes imply nothing.
    assert effective_scopes({"identity:admin"}).isdisjoint({"settlement:monitor", "ledger:monitor"})
    for alone in ("settlement:read", "payments:read", "audit:read", "ledger:write", "scheme:write"):
        assert effective_scopes({alone}) == {alone}


def test_a_read_only_caller_is_refused_the_operate_tier_naming_it() -> None:
    caller = Caller(
        subject="service:console",
        client_id="console",
        scopes=frozenset({"settlement:monitor"}),
        token_id="t",
        expires_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    )
    assert caller.has_scopes(["settlement:monitor"]) and not caller.has_scopes(["settlement:operate"])
    with pytest.raises(PermissionDenied) as refused:
        caller.require_scopes(["settlement:operate"])
    assert refused.value.reason == "INSUFFICIENT_SCOPE"
    assert "settlement:operate" in str(refused.value)
