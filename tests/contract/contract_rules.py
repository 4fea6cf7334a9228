"""Rules of the OpenBank Mesh contract, checked over descriptors.

Every rule takes a :class:`Contract` (a set of ``FileDescriptorProto``) and returns a list of
violations, each a readable sentence that names the offending element by its full name. An empty
list means the rule holds. The rules work on ``descriptor_pb2`` messages, so the same code checks
the generated modules, the descriptor set with comments, and the deliberately broken descriptors
built in the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2

from openbank.common.v1 import consent_permission_pb2, options_pb2

FDP = descriptor_pb2.FieldDescriptorProto

MONEY = ".openbank.common.v1.Money"
TIMESTAMP = ".google.protobuf.Timestamp"

RATE_LIMIT_CLASSES = frozenset({"token", "consents", "reads", "payments", "streams", "settlement", "internal"})
PARTNER_SCOPES = frozenset(
    {
        "accounts:read",
        "funds:confirm",
        "payments:write",
        "payments:read",
        "consents:read",
        "consents:write",
        "settlement:read",
        "events:read",
        "customers:onboard",
        "credit:offer",
    }
)
INTERNAL_SCOPES = frozenset(
    {
        "ledger:write",
        "ledger:read",
        "ledger:admin",
        "settlement:write",
        "settlement:admin",
        "identity:admin",
        "consents:authorise",
        "tokens:introspect",
        "payments:admin",
        "audit:read",
        # Operator tiers below <resource>:admin (meshlib.auth.scopes): day-to-day actions, reads.
        "identity:monitor",
        "ledger:monitor",
        "payments:operate",
        "payments:monitor",
        "settlement:operate",
        "settlement:monitor",
        "scheme:write",
        "scheme:read",
        "events:write",
    }
)
PROTOCOL_SERVICES = frozenset({"openbank.identity.v1.TokenService"})
# Field-name words that denote money: the last word of a field name.
MONEY_WORDS = frozenset({"amount", "limit", "cap"})
# Packages a file may import from, besides its own package.
ALLOWED_IMPORT_PREFIXES = ("google/protobuf/", "openbank/common/v1/")

P = options_pb2.MethodPolicy


@dataclass(frozen=True)
class Method:
    """One rpc with its file and service."""

    file: descriptor_pb2.FileDescriptorProto
    service: descriptor_pb2.ServiceDescriptorProto
    method: descriptor_pb2.MethodDescriptorProto

    @property
    def package(self) -> str:
        return self.file.package

    @property
    def service_name(self) -> str:
        return f"{self.file.package}.{self.service.name}"

    @property
    def full_name(self) -> str:
        return f"{self.service_name}.{self.method.name}"

    def policy(self) -> options_pb2.MethodPolicy | None:
        options = self.method.options
        if not options.HasExtension(options_pb2.policy):
            return None
        return options.Extensions[options_pb2.policy]


@dataclass
class Contract:
    """A set of proto files, with an index of their messages and enums by full name."""

    files: list[descriptor_pb2.FileDescriptorProto]
    messages: dict[str, descriptor_pb2.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for file in self.files:
            for name, message in _walk_messages(file.message_type, f".{file.package}"):
                self.messages[name] = message
                for enum in message.enum_type:
                    self.enums[f"{name}.{enum.name}"] = enum
            for enum in file.enum_type:
                self.enums[f".{file.package}.{enum.name}"] = enum

    @property
    def openbank_files(self) -> list[descriptor_pb2.FileDescriptorProto]:
        return [f for f in self.files if f.package.startswith("openbank.")]

    def methods(self) -> Iterator[Method]:
        for file in self.openbank_files:
            for service in file.service:
                for method in service.method:
                    yield Method(file, service, method)

    def all_messages(self) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
        for file in self.openbank_files:
            yield from _walk_messages(file.message_type, f".{file.package}")

    def all_enums(self) -> Iterator[tuple[str, descriptor_pb2.EnumDescriptorProto]]:
        for file in self.openbank_files:
            for enum in file.enum_type:
                yield f".{file.package}.{enum.name}", enum
            for name, message in _walk_messages(file.message_type, f".{file.package}"):
                for enum in message.enum_type:
                    yield f"{name}.{enum.name}", enum


def _walk_messages(
    messages: Iterable[descriptor_pb2.DescriptorProto], prefix: str
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    for message in messages:
        name = f"{prefix}.{message.name}"
        if message.options.map_entry:
            continue
        yield name, message
        yield from _walk_messages(message.nested_type, name)


def _field(message: descriptor_pb2.DescriptorProto, name: str) -> descriptor_pb2.FieldDescriptorProto | None:
    for candidate in message.field:
        if candidate.name == name:
            return candidate
    return None


def _upper_snake(name: str) -> str:
    out = []
    for index, char in enumerate(name):
        if (
            char.isupper()
            and index > 0
            and (not name[index - 1].isupper() or (index + 1 < len(name) and name[index + 1].islower()))
        ):
            out.append("_")
        out.append(char.upper())
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Policy rules
# ---------------------------------------------------------------------------------------------


def policy_present_and_complete(contract: Contract) -> list[str]:
    """Every rpc carries (openbank.common.v1.policy) with all six fields set and valid."""
    problems = []
    for m in contract.methods():
        policy = m.policy()
        if policy is None:
            problems.append(f"{m.full_name}: no (openbank.common.v1.policy) option")
            continue
        if policy.visibility == options_pb2.VISIBILITY_UNSPECIFIED:
            problems.append(f"{m.full_name}: policy.visibility unset")
        if policy.authentication == options_pb2.AUTHENTICATION_UNSPECIFIED:
            problems.append(f"{m.full_name}: policy.authentication unset")
        if policy.consent_permission == 0:
            problems.append(f"{m.full_name}: policy.consent_permission unset (use CONSENT_PERMISSION_NONE)")
        if policy.rate_limit_class not in RATE_LIMIT_CLASSES:
            problems.append(
                f"{m.full_name}: policy.rate_limit_class {policy.rate_limit_class!r} is not one of "
                f"{sorted(RATE_LIMIT_CLASSES)}"
            )
        if policy.idempotency == options_pb2.IDEMPOTENCY_UNSPECIFIED:
            problems.append(f"{m.full_name}: policy.idempotency unset")
        if policy.authentication == options_pb2.AUTHENTICATION_NONE:
            if policy.scopes:
                problems.append(f"{m.full_name}: AUTHENTICATION_NONE but scopes {list(policy.scopes)}")
        elif not policy.scopes:
            problems.append(f"{m.full_name}: policy.scopes empty for an authenticated rpc")
    return problems


def scopes_known_and_fit_visibility(contract: Contract) -> list[str]:
    """Public rpcs require partner scopes only; internal rpcs internal scopes only."""
    problems = []
    for m in contract.methods():
        policy = m.policy()
        if policy is None:
            continue
        allowed = PARTNER_SCOPES if policy.visibility == options_pb2.VISIBILITY_PUBLIC else INTERNAL_SCOPES
        for scope in policy.scopes:
            if scope not in PARTNER_SCOPES | INTERNAL_SCOPES:
                problems.append(f"{m.full_name}: unknown scope {scope!r}")
            elif scope not in allowed:
                problems.append(
                    f"{m.full_name}: scope {scope!r} does not fit visibility "
                    f"{options_pb2.Visibility.Name(policy.visibility)}"
                )
    return problems


def rate_limit_class_fits_visibility(contract: Contract) -> list[str]:
    """PUBLIC rpcs never use the "internal" class; INTERNAL rpcs always do."""
    problems = []
    for m in contract.methods():
        policy = m.policy()
        if policy is None:
            continue
        internal_class = policy.rate_limit_class == "internal"
        if policy.visibility == options_pb2.VISIBILITY_PUBLIC and internal_class:
            problems.append(f"{m.full_name}: PUBLIC rpc with rate_limit_class 'internal'")
        if policy.visibility == options_pb2.VISIBILITY_INTERNAL and not internal_class:
            problems.append(
                f"{m.full_name}: INTERNAL rpc with rate_limit_class {policy.rate_limit_class!r} (must be 'internal')"
            )
    return problems


def internal_rpcs_not_consent_bound(contract: Contract) -> list[str]:
    """Consent permissions are a partner concept: internal rpcs use CONSENT_PERMISSION_NONE."""
    problems = []
    for m in contract.methods():
        policy = m.policy()
        if policy is None:
            continue
        if (
            policy.visibility == options_pb2.VISIBILITY_INTERNAL
            and policy.consent_permission != consent_permission_pb2.CONSENT_PERMISSION_NONE
        ):
            problems.append(f"{m.full_name}: INTERNAL rpc bound to a consent permission")
    return problems


def request_id_rpcs_have_request_id(contract: Contract) -> list[str]:
    """IDEMPOTENCY_REQUEST_ID <=> the request has `string request_id = 1` (AIP-155)."""
    problems = []
    for m in contract.methods():
        policy = m.policy()
        request = contract.messages.get(m.method.input_type)
        request_name = m.method.input_type.lstrip(".")
        if request is None:
            problems.append(f"{m.full_name}: request type {request_name} not found")
            continue
        request_id = _field(request, "request_id")
        if policy is not None and policy.idempotency == options_pb2.IDEMPOTENCY_REQUEST_ID:
            if request_id is None:
                problems.append(f"{m.full_name}: IDEMPOTENCY_REQUEST_ID but {request_name} has no request_id")
            elif request_id.number != 1 or request_id.type != FDP.TYPE_STRING or request_id.label == FDP.LABEL_REPEATED:
                problems.append(f"{m.full_name}: {request_name}.request_id must be `string request_id = 1`")
        elif request_id is not None:
            problems.append(
                f"{m.full_name}: {request_name} has request_id but the policy's idempotency is not "
                "IDEMPOTENCY_REQUEST_ID"
            )
    return problems


def protocol_idempotency_only_in_token_service(contract: Contract) -> list[str]:
    """IDEMPOTENCY_PROTOCOL (OAuth semantics) is reserved to openbank.identity.v1.TokenService."""
    problems = []
    for m in contract.methods():
        policy = m.policy()
        if policy is not None and policy.idempotency == options_pb2.IDEMPOTENCY_PROTOCOL:
            if m.service_name not in PROTOCOL_SERVICES:
                problems.append(f"{m.full_name}: IDEMPOTENCY_PROTOCOL outside {sorted(PROTOCOL_SERVICES)}")
    return problems


def list_rpcs_paginate(contract: Contract) -> list[str]:
    """List* rpcs: request `int32 page_size` + `string page_token`, response `string next_page_token`."""
    problems = []

    def check(message_name: str, field_name: str, field_type: int, who: str) -> None:
        message = contract.messages.get(message_name)
        found = _field(message, field_name) if message is not None else None
        if found is None:
            problems.append(f"{who}: {message_name.lstrip('.')} lacks {field_name}")
        elif found.type != field_type or found.label == FDP.LABEL_REPEATED:
            expected = FDP.Type.Name(field_type).removeprefix("TYPE_").lower()
            problems.append(f"{who}: {message_name.lstrip('.')}.{field_name} must be a singular {expected}")

    for m in contract.methods():
        if not m.method.name.startswith("List"):
            continue
        check(m.method.input_type, "page_size", FDP.TYPE_INT32, m.full_name)
        check(m.method.input_type, "page_token", FDP.TYPE_STRING, m.full_name)
        check(m.method.output_type, "next_page_token", FDP.TYPE_STRING, m.full_name)
        policy = m.policy()
        if policy is not None and policy.idempotency != options_pb2.IDEMPOTENCY_READ_ONLY:
            problems.append(f"{m.full_name}: a List rpc must be IDEMPOTENCY_READ_ONLY")
    return problems


# ---------------------------------------------------------------------------------------------
# Shape rules
# ---------------------------------------------------------------------------------------------


def enums_have_unspecified_zero(contract: Contract) -> list[str]:
    """Every enum's first value is `<ENUM_NAME>_UNSPECIFIED = 0`."""
    problems = []
    for name, enum in contract.all_enums():
        expected = f"{_upper_snake(enum.name)}_UNSPECIFIED"
        if not enum.value or enum.value[0].number != 0 or enum.value[0].name != expected:
            first = f"{enum.value[0].name} = {enum.value[0].number}" if enum.value else "nothing"
            problems.append(f"{name.lstrip('.')}: first value must be {expected} = 0, found {first}")
    return problems


def no_floating_point(contract: Contract) -> list[str]:
    """No float or double field anywhere (money is Money, never a float)."""
    problems = []
    for name, message in contract.all_messages():
        for f in message.field:
            if f.type in (FDP.TYPE_FLOAT, FDP.TYPE_DOUBLE):
                problems.append(f"{name.lstrip('.')}.{f.name}: {FDP.Type.Name(f.type)} field")
    return problems


def money_fields_are_money(contract: Contract) -> list[str]:
    """A field whose name ends in amount/limit/cap (e.g. amount, per_payment_limit) is a singular Money."""
    problems = []
    for name, message in contract.all_messages():
        for f in message.field:
            if f.name.split("_")[-1] not in MONEY_WORDS:
                continue
            if f.type != FDP.TYPE_MESSAGE or f.type_name != MONEY or f.label == FDP.LABEL_REPEATED:
                problems.append(f"{name.lstrip('.')}.{f.name}: must be a singular openbank.common.v1.Money")
    return problems


def time_fields_are_timestamps(contract: Contract) -> list[str]:
    """A field named `*_time` is a google.protobuf.Timestamp (AIP-142)."""
    problems = []
    for name, message in contract.all_messages():
        for f in message.field:
            if f.name.endswith("_time") and f.type_name != TIMESTAMP:
                problems.append(f"{name.lstrip('.')}.{f.name}: must be a google.protobuf.Timestamp")
    return problems


def packages_match_directories(contract: Contract) -> list[str]:
    """openbank/<service>/v1/<file>.proto declares package openbank.<service>.v1, proto3."""
    problems = []
    for file in contract.openbank_files:
        directory = file.name.rsplit("/", 1)[0]
        if directory.replace("/", ".") != file.package:
            problems.append(f"{file.name}: package {file.package} does not match its directory")
        parts = file.package.split(".")
        if len(parts) != 3 or parts[0] != "openbank" or parts[2] != "v1":
            problems.append(f"{file.name}: package {file.package} is not openbank.<service>.v1")
        if file.syntax != "proto3":
            problems.append(f"{file.name}: syntax {file.syntax!r}, expected proto3")
    return problems


def imports_stay_inside_boundaries(contract: Contract) -> list[str]:
    """Files import only well-known types, openbank.common.v1 and their own package (no googleapis,
    no other service's messages: services refer to each other by resource name)."""
    problems = []
    for file in contract.openbank_files:
        own = file.package.replace(".", "/") + "/"
        for dependency in file.dependency:
            if dependency.startswith(own) or dependency.startswith(ALLOWED_IMPORT_PREFIXES):
                continue
            problems.append(f"{file.name}: imports {dependency}")
    return problems


def rpcs_have_own_request_response(contract: Contract) -> list[str]:
    """Each rpc Xxx has its own XxxRequest / XxxResponse, used by no other rpc."""
    problems = []
    seen: dict[str, str] = {}
    for m in contract.methods():
        for type_name, suffix in ((m.method.input_type, "Request"), (m.method.output_type, "Response")):
            expected = f".{m.package}.{m.method.name}{suffix}"
            if type_name != expected:
                problems.append(f"{m.full_name}: uses {type_name.lstrip('.')}, expected {expected.lstrip('.')}")
            if type_name in seen:
                problems.append(f"{m.full_name}: {type_name.lstrip('.')} is also used by {seen[type_name]}")
            seen[type_name] = m.full_name
    return problems


# ---------------------------------------------------------------------------------------------
# Documentation rule (needs source info: the descriptor set written by scripts/gen_protos.py)
# ---------------------------------------------------------------------------------------------

# FileDescriptorProto / DescriptorProto / ... field numbers used in SourceCodeInfo paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM, _MESSAGE_ONEOF = 2, 3, 4, 8
_ENUM_VALUE = 2
_SERVICE_METHOD = 2


def _documented_elements(
    file: descriptor_pb2.FileDescriptorProto,
) -> Iterator[tuple[tuple[int, ...], str]]:
    """(source path, readable name) of every element that needs a leading comment."""
    package = file.package

    def enum_elements(enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], name: str):
        yield path, f"enum {name}"
        for index, value in enumerate(enum.value):
            yield (*path, _ENUM_VALUE, index), f"enum value {name}.{value.name}"

    def message_elements(message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], name: str):
        if message.options.map_entry:
            return
        yield path, f"message {name}"
        for index, f in enumerate(message.field):
            yield (*path, _MESSAGE_FIELD, index), f"field {name}.{f.name}"
        for index, oneof in enumerate(message.oneof_decl):
            if oneof.name.startswith("_"):  # synthetic oneof of a proto3 `optional` field
                continue
            yield (*path, _MESSAGE_ONEOF, index), f"oneof {name}.{oneof.name}"
        for index, nested in enumerate(message.nested_type):
            yield from message_elements(nested, (*path, _MESSAGE_NESTED, index), f"{name}.{nested.name}")
        for index, enum in enumerate(message.enum_type):
            yield from enum_elements(enum, (*path, _MESSAGE_ENUM, index), f"{name}.{enum.name}")

    for index, message in enumerate(file.message_type):
        yield from message_elements(message, (_FILE_MESSAGE, index), f"{package}.{message.name}")
    for index, enum in enumerate(file.enum_type):
        yield from enum_elements(enum, (_FILE_ENUM, index), f"{package}.{enum.name}")
    for index, service in enumerate(file.service):
        yield (_FILE_SERVICE, index), f"service {package}.{service.name}"
        for method_index, method in enumerate(service.method):
            yield (
                (_FILE_SERVICE, index, _SERVICE_METHOD, method_index),
                f"rpc {package}.{service.name}.{method.name}",
            )


def everything_documented(contract: Contract) -> list[str]:
    """Every service, rpc, message, field, oneof, enum and enum value has a leading doc comment."""
    problems = []
    for file in contract.openbank_files:
        if not file.HasField("source_code_info"):
            problems.append(f"{file.name}: no source info (build the descriptor set with --include_source_info)")
            continue
        comments = {tuple(location.path): location.leading_comments for location in file.source_code_info.location}
        for path, element in _documented_elements(file):
            if not comments.get(path, "").strip():
                problems.append(f"{file.name}: {element} has no leading doc comment")
    return problems


ALL_RULES = (
    policy_present_and_complete,
    scopes_known_and_fit_visibility,
    rate_limit_class_fits_visibility,
    internal_rpcs_not_consent_bound,
    request_id_rpcs_have_request_id,
    protocol_idempotency_only_in_token_service,
    list_rpcs_paginate,
    enums_have_unspecified_zero,
    no_floating_point,
    money_fields_are_money,
    time_fields_are_timestamps,
    packages_match_directories,
    imports_stay_inside_boundaries,
    rpcs_have_own_request_response,
)
