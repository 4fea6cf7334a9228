"""The contract's checks are honest: deliberately broken descriptors, built in memory, are
caught by the same rules (``contract_rules.py``) that ``test_contract.py`` runs on the real
contract, and a sample file that obeys them all passes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from openbank.common.v1 import consent_permission_pb2, money_pb2, options_pb2
from tests.contract import contract_rules as rules

FDP = descriptor_pb2.FieldDescriptorProto
CP = consent_permission_pb2

SAMPLE_FILE = "openbank/sample/v1/sample.proto"


def _policy(**overrides: object) -> options_pb2.MethodPolicy:
    values: dict[str, object] = {
        "visibility": options_pb2.VISIBILITY_INTERNAL,
        "authentication": options_pb2.AUTHENTICATION_ACCESS_TOKEN,
        "scopes": ["ledger:read"],
        "consent_permission": CP.CONSENT_PERMISSION_NONE,
        "rate_limit_class": "internal",
        "idempotency": options_pb2.IDEMPOTENCY_READ_ONLY,
    }
    values.update(overrides)
    return options_pb2.MethodPolicy(**values)  # type: ignore[arg-type]


def _sample_file() -> descriptor_pb2.FileDescriptorProto:
    """A small, valid, fully documented file that passes every rule."""
    fdp = descriptor_pb2.FileDescriptorProto(name=SAMPLE_FILE, package="openbank.sample.v1", syntax="proto3")
    fdp.dependency.extend(["openbank/common/v1/options.proto", "openbank/common/v1/money.proto"])
    request = fdp.message_type.add(name="GetThingRequest")
    request.field.add(name="name", number=1, type=FDP.TYPE_STRING, label=FDP.LABEL_OPTIONAL)
    response = fdp.message_type.add(name="GetThingResponse")
    response.field.add(
        name="amount",
        number=1,
        type=FDP.TYPE_MESSAGE,
        type_name=".openbank.common.v1.Money",
        label=FDP.LABEL_OPTIONAL,
    )
    enum = fdp.enum_type.add(name="ThingState")
    enum.value.add(name="THING_STATE_UNSPECIFIED", number=0)
    enum.value.add(name="THING_STATE_READY", number=1)
    service = fdp.service.add(name="SampleService")
    method = service.method.add(
        name="GetThing",
        input_type=".openbank.sample.v1.GetThingRequest",
        output_type=".openbank.sample.v1.GetThingResponse",
    )
    method.options.Extensions[options_pb2.policy].CopyFrom(_policy())
    _document_everything(fdp)
    return fdp


def _document_everything(fdp: descriptor_pb2.FileDescriptorProto) -> None:
    fdp.ClearField("source_code_info")
    for path, element in rules._documented_elements(fdp):
        location = fdp.source_code_info.location.add()
        location.path.extend(path)
        location.span.extend([0, 0, 0])
        location.leading_comments = f" Doc of {element}.\n"


def _method(fdp: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.MethodDescriptorProto:
    return fdp.service[0].method[0]


def _through_pool(fdp: descriptor_pb2.FileDescriptorProto) -> rules.Contract:
    """Build the file in a fresh DescriptorPool (proving it is a valid descriptor), then check what
    the pool hands back, with the original source info (pools keep no comments)."""
    pool = descriptor_pool.DescriptorPool()
    for module in (descriptor_pb2, consent_permission_pb2, options_pb2, money_pb2):
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb))
    for dependency in fdp.dependency:
        if dependency.startswith("google/api/"):
            pool.Add(descriptor_pb2.FileDescriptorProto(name=dependency, package="google.api", syntax="proto3"))
    pool.Add(fdp)
    built = descriptor_pb2.FileDescriptorProto()
    pool.FindFileByName(fdp.name).CopyToProto(built)
    built.source_code_info.CopyFrom(fdp.source_code_info)
    return rules.Contract([built])


def test_sample_file_passes_every_rule() -> None:
    contract = _through_pool(_sample_file())
    for rule in (*rules.ALL_RULES, rules.everything_documented):
        assert rule(contract) == [], rule.__name__


def test_checker_catches_a_missing_policy_option() -> None:
    fdp = _sample_file()
    _method(fdp).ClearField("options")
    contract = _through_pool(fdp)
    # The rpc exists in the pool, without options...
    assert contract.files[0].service[0].method[0].name == "GetThing"
    # ...and the rule names it.
    assert rules.policy_present_and_complete(contract) == [
        "openbank.sample.v1.SampleService.GetThing: no (openbank.common.v1.policy) option"
    ]


def _set_policy(**overrides: object) -> Callable[[descriptor_pb2.FileDescriptorProto], None]:
    def mutate(fdp: descriptor_pb2.FileDescriptorProto) -> None:
        _method(fdp).options.Extensions[options_pb2.policy].CopyFrom(_policy(**overrides))

    return mutate


def _add_field(message: int, **kwargs: object) -> Callable[[descriptor_pb2.FileDescriptorProto], None]:
    def mutate(fdp: descriptor_pb2.FileDescriptorProto) -> None:
        fdp.message_type[message].field.add(label=FDP.LABEL_OPTIONAL, **kwargs)
        _document_everything(fdp)

    return mutate


def _rename_method(name: str) -> Callable[[descriptor_pb2.FileDescriptorProto], None]:
    def mutate(fdp: descriptor_pb2.FileDescriptorProto) -> None:
        _method(fdp).name = name

    return mutate


def _drop_unspecified(fdp: descriptor_pb2.FileDescriptorProto) -> None:
    enum = fdp.enum_type[0]
    enum.value[0].name = "THING_STATE_NEW"
    _document_everything(fdp)


def _drop_a_comment(fdp: descriptor_pb2.FileDescriptorProto) -> None:
    locations = list(fdp.source_code_info.location)
    fdp.source_code_info.ClearField("location")
    fdp.source_code_info.location.extend(loc for loc in locations if list(loc.path) != [4, 1, 2, 0])


def _import_googleapis(fdp: descriptor_pb2.FileDescriptorProto) -> None:
    fdp.dependency.append("google/api/annotations.proto")


BROKEN = {
    "policy without idempotency": (
        _set_policy(idempotency=options_pb2.IDEMPOTENCY_UNSPECIFIED),
        rules.policy_present_and_complete,
        "SampleService.GetThing: policy.idempotency unset",
    ),
    "policy with unknown rate-limit class": (
        _set_policy(rate_limit_class="bulk"),
        rules.policy_present_and_complete,
        "SampleService.GetThing: policy.rate_limit_class 'bulk'",
    ),
    "public rpc in the internal rate-limit class": (
        _set_policy(visibility=options_pb2.VISIBILITY_PUBLIC, scopes=["accounts:read"]),
        rules.rate_limit_class_fits_visibility,
        "SampleService.GetThing: PUBLIC rpc with rate_limit_class 'internal'",
    ),
    "internal rpc outside the internal rate-limit class": (
        _set_policy(rate_limit_class="reads"),
        rules.rate_limit_class_fits_visibility,
        "SampleService.GetThing: INTERNAL rpc with rate_limit_class 'reads'",
    ),
    "internal scope on a public rpc": (
        _set_policy(visibility=options_pb2.VISIBILITY_PUBLIC, rate_limit_class="reads"),
        rules.scopes_known_and_fit_visibility,
        "SampleService.GetThing: scope 'ledger:read' does not fit visibility VISIBILITY_PUBLIC",
    ),
    "REQUEST_ID without request_id": (
        _set_policy(idempotency=options_pb2.IDEMPOTENCY_REQUEST_ID),
        rules.request_id_rpcs_have_request_id,
        "GetThing: IDEMPOTENCY_REQUEST_ID but openbank.sample.v1.GetThingRequest has no request_id",
    ),
    "PROTOCOL outside TokenService": (
        _set_policy(idempotency=options_pb2.IDEMPOTENCY_PROTOCOL),
        rules.protocol_idempotency_only_in_token_service,
        "SampleService.GetThing: IDEMPOTENCY_PROTOCOL outside",
    ),
    "List rpc without pagination": (
        _rename_method("ListThings"),
        rules.list_rpcs_paginate,
        "SampleService.ListThings: openbank.sample.v1.GetThingRequest lacks page_size",
    ),
    "enum without UNSPECIFIED zero": (
        _drop_unspecified,
        rules.enums_have_unspecified_zero,
        "openbank.sample.v1.ThingState: first value must be THING_STATE_UNSPECIFIED = 0",
    ),
    "double field": (
        _add_field(1, name="ratio", number=2, type=FDP.TYPE_DOUBLE),
        rules.no_floating_point,
        "openbank.sample.v1.GetThingResponse.ratio: TYPE_DOUBLE field",
    ),
    "amount as an integer": (
        _add_field(1, name="fee_amount", number=3, type=FDP.TYPE_INT64),
        rules.money_fields_are_money,
        "openbank.sample.v1.GetThingResponse.fee_amount: must be a singular openbank.common.v1.Money",
    ),
    "time as a string": (
        _add_field(1, name="create_time", number=4, type=FDP.TYPE_STRING),
        rules.time_fields_are_timestamps,
        "openbank.sample.v1.GetThingResponse.create_time: must be a google.protobuf.Timestamp",
    ),
    "googleapis import": (
        _import_googleapis,
        rules.imports_stay_inside_boundaries,
        "openbank/sample/v1/sample.proto: imports google/api/annotations.proto",
    ),
    "rpc with a foreign request type": (
        _rename_method("FindThing"),
        rules.rpcs_have_own_request_response,
        "SampleService.FindThing: uses openbank.sample.v1.GetThingRequest, expected",
    ),
    "field without doc comment": (
        _drop_a_comment,
        rules.everything_documented,
        "field openbank.sample.v1.GetThingResponse.amount has no leading doc comment",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_checker_catches(case: str) -> None:
    mutate, rule, expected = BROKEN[case]
    fdp = _sample_file()
    mutate(fdp)
    problems = rule(_through_pool(fdp))
    assert any(expected in p for p in problems), f"{rule.__name__} missed {case!r}: {problems}"
