"""Operator scope tiers: what a granted scope also allows.

Each operator surface (identity, ledger, payments, settlement) has three tiers, declared per
rpc in the contract's policy (``openbank.common.v1.options``): ``<resource>:monitor`` to read
(the read-only operator), ``<resource>:operate`` for day-to-day actions (close a settlement
window, approve a held payment), ``<resource>:admin`` to manage (participants, caps, partners,
keys). A higher tier includes the lower ones, so an rpc declares the least tier that suffices
and the clients holding ``<resource>:admin`` (the CLI's operator client, the services) keep
every rpc they had. Nothing else implies anything: partner scopes and the other internal
scopes stand alone.
"""

from __future__ import annotations

from collections.abc import Iterable

TIERED_RESOURCES = frozenset({"identity", "ledger", "payments", "settlement"})
# Each tier and the tiers it includes.
_INCLUDES = {"admin": ("operate", "monitor"), "operate": ("monitor",)}


def effective_scopes(granted: Iterable[str]) -> frozenset[str]:
    """The granted scopes with the lower operator tiers they include."""
    scopes = set(granted)
    for scope in tuple(scopes):
        resource, _, tier = scope.partition(":")
        if resource in TIERED_RESOURCES:
            scopes.update(f"{resource}:{lower}" for lower in _INCLUDES.get(tier, ()))
    return frozenset(scopes)
