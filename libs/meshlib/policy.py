"""Per-rpc policy read from the contract: the ``openbank.common.v1.policy`` method option.

The gateway builds its route table from it and the auth interceptor its scope checks, so
policy lives in exactly one place: the protos.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass

from google.protobuf import descriptor

VISIBILITY_PUBLIC = "PUBLIC"
VISIBILITY_INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class MethodPolicy:
    """What the contract says about one rpc."""

    full_method: str  # "/openbank.account.v1.AccountService/GetBalance"
    service: str  # "openbank.account.v1.AccountService"
    method: str  # "GetBalance"
    visibility: str  # "PUBLIC" | "INTERNAL"
    requires_token: bool
    scopes: frozenset[str]
    consent_permission: str | None  # "READ_BALANCES", or None when not consent-bound
    rate_limit_class: str
    idempotency: str  # "READ_ONLY" | "REQUEST_ID" | "PROTOCOL"
    client_streaming: bool
    server_streaming: bool
    input_type: str
    output_type: str

    @property
    def is_public(self) -> bool:
        """Served to partners through the gateway."""
        return self.visibility == VISIBILITY_PUBLIC


def import_contract_modules() -> list[object]:
    """Import every generated ``openbank.*.v1`` module so their descriptors are registered."""
    import openbank

    modules = []
    for info in pkgutil.walk_packages(openbank.__path__, prefix="openbank."):
        if info.name.endswith("_pb2"):
            modules.append(importlib.import_module(info.name))
    return modules


def _enum_suffix(enum_descriptor: descriptor.EnumDescriptor, number: int, prefix: str) -> str:
    name = enum_descriptor.values_by_number[number].name if number in enum_descriptor.values_by_number else ""
    return name[len(prefix) :] if name.startswith(prefix) else name


def policy_of(method: descriptor.MethodDescriptor) -> MethodPolicy | None:
    """The declared policy of one rpc, or None if it declares none."""
    from openbank.common.v1 import consent_permission_pb2, options_pb2

    options = method.GetOptions()
    if not options.HasExtension(options_pb2.policy):
        return None
    declared = options.Extensions[options_pb2.policy]
    permission = _enum_suffix(
        consent_permission_pb2.ConsentPermission.DESCRIPTOR, declared.consent_permission, "CONSENT_PERMISSION_"
    )
    authentication = _enum_suffix(options_pb2.Authentication.DESCRIPTOR, declared.authentication, "AUTHENTICATION_")
    service = method.containing_service.full_name
    return MethodPolicy(
        full_method=f"/{service}/{method.name}",
        service=service,
        method=method.name,
        visibility=_enum_suffix(options_pb2.Visibility.DESCRIPTOR, declared.visibility, "VISIBILITY_"),
        requires_token=authentication != "NONE",
        scopes=frozenset(declared.scopes),
        consent_permission=None if permission in ("NONE", "UNSPECIFIED") else permission,
        rate_limit_class=declared.rate_limit_class,
        idempotency=_enum_suffix(options_pb2.Idempotency.DESCRIPTOR, declared.idempotency, "IDEMPOTENCY_"),
        client_streaming=method.client_streaming,
        server_streaming=method.server_streaming,
        input_type=method.input_type.full_name,
        output_type=method.output_type.full_name,
    )


@functools.cache
def contract_policies() -> dict[str, MethodPolicy]:
    """Every rpc of the contract that declares a policy, by full method path."""
    policies: dict[str, MethodPolicy] = {}
    for module in import_contract_modules():
        file_descriptor: descriptor.FileDescriptor = module.DESCRIPTOR  # type: ignore[attr-defined]
        for service in file_descriptor.services_by_name.values():
            for method in service.methods:
                declared = policy_of(method)
                if declared is not None:
                    policies[declared.full_method] = declared
    return policies


def service_policies(service_full_name: str) -> dict[str, MethodPolicy]:
    """The policies of one service's rpcs."""
    return {k: v for k, v in contract_policies().items() if v.service == service_full_name}
