"""The route table, built from the contract: every PUBLIC rpc and its upstream."""

from __future__ import annotations

from dataclasses import dataclass

from meshlib.policy import MethodPolicy, contract_policies


@dataclass(frozen=True)
class Route:
    """One public rpc: its policy and the upstream service that answers it."""

    policy: MethodPolicy
    upstream: str  # "identity" | "account" | "payment" | "settlement"


# Contract packages served by another package's process: the partner event log lives in
# identity, beside the partners and consents it is about.
HOSTED_BY = {"events": "identity", "credit": "account"}


def upstream_of(service_full_name: str) -> str:
    """``openbank.account.v1.AccountService`` -> ``account``."""
    parts = service_full_name.split(".")
    if len(parts) < 4 or parts[0] != "openbank":
        raise ValueError(f"not an openbank service: {service_full_name}")
    return HOSTED_BY.get(parts[1], parts[1])


def build_routes(policies: dict[str, MethodPolicy] | None = None) -> dict[str, Route]:
    """Routes for exactly the PUBLIC rpcs; everything else stays unknown (UNIMPLEMENTED)."""
    policies = contract_policies() if policies is None else policies
    return {
        path: Route(policy, upstream_of(policy.service))
        for path, policy in policies.items()
        if policy.is_public and not policy.client_streaming
    }
