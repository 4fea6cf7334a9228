"""Contract tests: the generated openbank.*.v1 descriptors obey the contract's rules.

No network, no servers. The descriptors come from the generated ``*_pb2`` modules under
``gen/openbank`` (what the runtime and the gateway read) and, for doc comments, from
``gen/openbank_descriptor_set.binpb`` (written by ``scripts/gen_protos.py`` with source info).
Each rule lives in ``contract_rules.py`` and is checked by its own test; the last tests feed
deliberately broken descriptors to the same rules to show they catch what they claim to
(``test_contract_checks.py``).
"""

from __future__ import annotations

import importlib
import importlib.resources
import pkgutil
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

import openbank
from openbank.common.v1 import error_reason_pb2, options_pb2
from tests.contract import contract_rules as rules
from tests.contract.expected_surface import (
    EXPECTED_RPCS,
    GRPC_CODES,
    PUBLIC_RPCS,
    REQUIRED_ERROR_REASONS,
    STREAMING_RPCS,
)

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "protos"
DESCRIPTOR_SET = ROOT / "gen" / "openbank_descriptor_set.binpb"
GENERATE_HINT = "run: .venv/bin/python scripts/gen_protos.py"

Rule = Callable[[rules.Contract], list[str]]
FDP = descriptor_pb2.FieldDescriptorProto

# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _generated_modules() -> list:
    modules = []
    for info in pkgutil.walk_packages(openbank.__path__, prefix="openbank."):
        parts = info.name.split(".")
        if len(parts) == 4 and parts[2] == "v1" and parts[3].endswith("_pb2"):
            modules.append(importlib.import_module(info.name))
    return modules


def _module_files() -> list[descriptor_pb2.FileDescriptorProto]:
    return [descriptor_pb2.FileDescriptorProto.FromString(m.DESCRIPTOR.serialized_pb) for m in _generated_modules()]


@pytest.fixture(scope="module")
def contract() -> rules.Contract:
    files = _module_files()
    if not files:
        pytest.fail(f"no generated openbank.*.v1 modules under gen/openbank; {GENERATE_HINT}")
    return rules.Contract(files)


@pytest.fixture(scope="module")
def documented_contract() -> rules.Contract:
    if not DESCRIPTOR_SET.is_file():
        pytest.fail(f"{DESCRIPTOR_SET} missing; {GENERATE_HINT}")
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    return rules.Contract(list(descriptor_set.file))


def _assert_clean(rule: Rule, contract: rules.Contract) -> None:
    problems = rule(contract)
    assert not problems, f"{rule.__name__} ({(rule.__doc__ or '').strip()}):\n  " + "\n  ".join(problems)


def _normalized(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """The file without what only descriptor sets carry (source info, json_name)."""
    copy = descriptor_pb2.FileDescriptorProto()
    copy.CopyFrom(file)
    copy.ClearField("source_code_info")

    def strip(messages) -> None:
        for message in messages:
            for f in (*message.field, *message.extension):
                f.ClearField("json_name")
            strip(message.nested_type)

    strip(copy.message_type)
    for f in copy.extension:
        f.ClearField("json_name")
    return copy


def _policies(contract: rules.Contract) -> dict[str, options_pb2.MethodPolicy]:
    return {m.full_name: p for m in contract.methods() if (p := m.policy()) is not None}


# ---------------------------------------------------------------------------------------------
# The generated code is the contract
# ---------------------------------------------------------------------------------------------


def test_every_proto_file_is_generated(contract: rules.Contract) -> None:
    sources = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in (PROTO_ROOT / "openbank").rglob("*.proto"))
    generated = sorted(f.name for f in contract.openbank_files)
    assert generated == sources, f"gen/ does not match protos/; {GENERATE_HINT}"


def test_generated_code_is_up_to_date(contract: rules.Contract, tmp_path: Path) -> None:
    """Compile protos/ now and compare with what the generated modules carry."""
    from grpc_tools import protoc

    wkt = Path(str(importlib.resources.files("grpc_tools") / "_proto"))
    out = tmp_path / "fresh.binpb"
    sources = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in (PROTO_ROOT / "openbank").rglob("*.proto"))
    status = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{wkt}", f"--descriptor_set_out={out}", *sources])
    assert status == 0, "protoc failed on protos/"
    fresh = {f.name: _normalized(f) for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file}
    stale = [f.name for f in contract.openbank_files if fresh.get(f.name) != _normalized(f)]
    assert not stale, f"generated code is stale for {stale}; {GENERATE_HINT}"


def test_descriptor_set_matches_generated_modules(
    contract: rules.Contract, documented_contract: rules.Contract
) -> None:
    modules = {f.name: f for f in contract.openbank_files}
    problems = []
    for file in documented_contract.openbank_files:
        module = modules.get(file.name)
        if module is None or _normalized(module) != _normalized(file):
            problems.append(file.name)
    missing = set(modules) - {f.name for f in documented_contract.openbank_files}
    assert not problems and not missing, f"descriptor set out of date ({problems or sorted(missing)}); {GENERATE_HINT}"


def test_policy_extension_api_for_the_runtime() -> None:
    """libs/meshlib/policy.py reads `options_pb2.policy` from MethodOptions: keep that API stable."""
    extension = options_pb2.policy
    assert extension.full_name == "openbank.common.v1.policy"
    assert extension.number == 51001
    assert extension.containing_type.full_name == "google.protobuf.MethodOptions"
    assert extension.message_type.full_name == "openbank.common.v1.MethodPolicy"
    assert [f.name for f in options_pb2.MethodPolicy.DESCRIPTOR.fields] == [
        "visibility",
        "authentication",
        "scopes",
        "consent_permission",
        "rate_limit_class",
        "idempotency",
    ]


# ---------------------------------------------------------------------------------------------
# One test per rule, over the real contract
# ---------------------------------------------------------------------------------------------


def test_every_rpc_has_a_complete_policy(contract: rules.Contract) -> None:
    _assert_clean(rules.policy_present_and_complete, contract)


def test_scopes_are_known_and_fit_visibility(contract: rules.Contract) -> None:
    _assert_clean(rules.scopes_known_and_fit_visibility, contract)


def test_rate_limit_class_fits_visibility(contract: rules.Contract) -> None:
    _assert_clean(rules.rate_limit_class_fits_visibility, contract)


def test_internal_rpcs_are_not_consent_bound(contract: rules.Contract) -> None:
    _assert_clean(rules.internal_rpcs_not_consent_bound, contract)


def test_request_id_rpcs_have_request_id_field_1(contract: rules.Contract) -> None:
    _assert_clean(rules.request_id_rpcs_have_request_id, contract)


def test_protocol_idempotency_only_in_token_service(contract: rules.Contract) -> None:
    _assert_clean(rules.protocol_idempotency_only_in_token_service, contract)


def test_list_rpcs_paginate(contract: rules.Contract) -> None:
    _assert_clean(rules.list_rpcs_paginate, contract)


def test_enums_have_unspecified_zero_value(contract: rules.Contract) -> None:
    _assert_clean(rules.enums_have_unspecified_zero, contract)


def test_no_floating_point_fields(contract: rules.Contract) -> None:
    _assert_clean(rules.no_floating_point, contract)


def test_amount_limit_cap_fields_are_money(contract: rules.Contract) -> None:
    _assert_clean(rules.money_fields_are_money, contract)


def test_time_fields_are_timestamps(contract: rules.Contract) -> None:
    _assert_clean(rules.time_fields_are_timestamps, contract)


def test_packages_match_directories(contract: rules.Contract) -> None:
    _assert_clean(rules.packages_match_directories, contract)


def test_imports_stay_inside_boundaries(contract: rules.Contract) -> None:
    _assert_clean(rules.imports_stay_inside_boundaries, contract)


def test_every_rpc_has_its_own_request_and_response(contract: rules.Contract) -> None:
    _assert_clean(rules.rpcs_have_own_request_response, contract)


def test_everything_is_documented(documented_contract: rules.Contract) -> None:
    _assert_clean(rules.everything_documented, documented_contract)


# ---------------------------------------------------------------------------------------------
# The public surface and the promised rpcs
# ---------------------------------------------------------------------------------------------


def test_public_rpcs_are_exactly_the_partner_surface(contract: rules.Contract) -> None:
    public = {name for name, p in _policies(contract).items() if p.visibility == options_pb2.VISIBILITY_PUBLIC}
    unexpected = sorted(public - set(PUBLIC_RPCS))
    missing = sorted(set(PUBLIC_RPCS) - public)
    assert not unexpected, f"rpcs PUBLIC that must be INTERNAL: {unexpected}"
    assert not missing, f"partner rpcs missing or not PUBLIC: {missing}"


@pytest.mark.parametrize("rpc", sorted(PUBLIC_RPCS))
def test_public_rpc_policy(contract: rules.Contract, rpc: str) -> None:
    policy = _policies(contract).get(rpc)
    assert policy is not None, f"{rpc}: missing or without policy"
    authentication, scopes, permission, rate_limit_class, idempotency = PUBLIC_RPCS[rpc]
    actual = (
        policy.authentication,
        tuple(sorted(policy.scopes)),
        policy.consent_permission,
        policy.rate_limit_class,
        policy.idempotency,
    )
    assert actual == (authentication, tuple(sorted(scopes)), permission, rate_limit_class, idempotency), (
        f"{rpc}: policy {actual} differs from the partner contract "
        f"{(authentication, scopes, permission, rate_limit_class, idempotency)}"
    )


def test_streaming_rpcs(contract: rules.Contract) -> None:
    problems = []
    for m in contract.methods():
        if m.method.client_streaming:
            problems.append(f"{m.full_name}: client streaming is not part of the contract")
        if m.method.server_streaming != (m.full_name in STREAMING_RPCS):
            kind = "server streaming" if m.full_name in STREAMING_RPCS else "unary"
            problems.append(f"{m.full_name}: must be {kind}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("service", sorted(EXPECTED_RPCS))
def test_promised_rpcs_exist(contract: rules.Contract, service: str) -> None:
    present = {m.method.name for m in contract.methods() if m.service_name == service}
    missing = sorted(EXPECTED_RPCS[service] - present)
    assert not missing, f"{service}: missing rpcs {missing}"


def test_error_reasons(documented_contract: rules.Contract) -> None:
    names = {v.name for v in error_reason_pb2.ErrorReason.DESCRIPTOR.values}
    missing = sorted(r for r in REQUIRED_ERROR_REASONS if f"ERROR_REASON_{r}" not in names)
    assert not missing, f"ErrorReason lacks {missing}"
    assert "ERROR_REASON_ACCOUNT_NOT_IN_CONSENT" not in names, "outside-consent accounts are RESOURCE_NOT_FOUND"
    # Each reason's doc comment names the gRPC code that carries it.
    file = next(f for f in documented_contract.files if f.name == "openbank/common/v1/error_reason.proto")
    enum_index = [e.name for e in file.enum_type].index("ErrorReason")
    comments = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
    undocumented = [
        value.name
        for index, value in enumerate(file.enum_type[enum_index].value)
        if index > 0 and not any(code in comments.get((5, enum_index, 2, index), "") for code in GRPC_CODES)
    ]
    assert not undocumented, f"ErrorReason values whose comment names no gRPC code: {undocumented}"
