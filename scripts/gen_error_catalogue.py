#!/usr/bin/env python3
"""Generate docs/error-reasons.md, the error reasons catalogue, from the contract.

The source of truth is ``openbank.common.v1.ErrorReason`` in
``protos/openbank/common/v1/error_reason.proto``: each value's doc comment starts with its gRPC
code, then says what happened and what the caller should do. The protos are compiled in-process
with ``grpc_tools.protoc`` (source info kept, so the comments come along; nothing is written
under gen/), and every rpc comment is scanned for the reasons it documents, so the catalogue also
says which public rpcs can answer each reason.

Usage:
  python scripts/gen_error_catalogue.py           # (re)write docs/error-reasons.md
  python scripts/gen_error_catalogue.py --check   # exit 1 when the committed file is stale
"""

from __future__ import annotations

import argparse
import importlib.resources
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUTPUT = ROOT / "docs" / "error-reasons.md"
ERROR_REASON_FILE = "openbank/common/v1/error_reason.proto"
PREFIX = "ERROR_REASON_"
GRPC_CODES = (
    "CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS PERMISSION_DENIED "
    "RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE UNIMPLEMENTED INTERNAL UNAVAILABLE "
    "DATA_LOSS UNAUTHENTICATED"
).split()
# Sentences that tell the caller what to do start with one of these words.
ACTION_VERBS = (
    "Fix Retry Do Use Send Restart Read Re-read Obtain Refresh Start Request Contact Wait Create Ask Close "
    "Treat Report Register"
).split()
# When the comment gives no advice, the gRPC code's usual one.
DEFAULT_ACTION = {
    "INVALID_ARGUMENT": "Fix the request; do not retry it unchanged.",
    "FAILED_PRECONDITION": "Do not retry unchanged.",
    "ALREADY_EXISTS": "Do not retry with the same fields.",
    "PERMISSION_DENIED": "Do not retry unchanged.",
}
# SourceCodeInfo paths: FileDescriptorProto.enum_type = 5, EnumDescriptorProto.value = 2,
# FileDescriptorProto.service = 6, ServiceDescriptorProto.method = 2.
ENUM_TYPE, ENUM_VALUE, SERVICE, METHOD = 5, 2, 6, 2
POLICY_EXTENSION_FIELD = 51001  # openbank.common.v1.policy on MethodOptions
VISIBILITY_PUBLIC = 1
SECTION = re.compile(r"^-+\s*(.+?)\s*\(\d+-\d+\)\s*-+$")


@dataclass
class Reason:
    """One ErrorReason value as documented in the contract."""

    wire: str
    number: int
    section: str
    codes: list[str]
    meaning: str
    action: str
    public_rpcs: list[str] = field(default_factory=list)


def compile_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """Every protos/openbank/**/*.proto compiled with source info, imports included."""
    from grpc_tools import protoc

    well_known = Path(str(importlib.resources.files("grpc_tools") / "_proto"))
    files = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "openbank").rglob("*.proto"))
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "contract.binpb"
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"--proto_path={PROTO_ROOT}",
                f"--proto_path={well_known}",
                f"--descriptor_set_out={out}",
                "--include_imports",
                "--include_source_info",
                *files,
            ]
        )
        if status != 0:
            raise SystemExit(f"gen_error_catalogue: protoc failed with status {status}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _comments(
    file: descriptor_pb2.FileDescriptorProto,
) -> dict[tuple[int, ...], descriptor_pb2.SourceCodeInfo.Location]:
    return {tuple(location.path): location for location in file.source_code_info.location}


def _clean(comment: str) -> str:
    """A doc comment as one line of text."""
    return " ".join(line.strip() for line in comment.strip().splitlines() if line.strip())


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.])\s+(?=[A-Z`])", text) if s]


def _is_advice(sentence: str) -> bool:
    words = sentence.split(maxsplit=1)
    return bool(words) and words[0].rstrip(",;") in ACTION_VERBS


def split_comment(text: str) -> tuple[list[str], str, str]:
    """(gRPC codes, meaning, advice) of one ErrorReason comment."""
    sentences = _sentences(text)
    first = sentences[0] if sentences else ""
    codes = [code for code in re.findall(r"\b[A-Z_]{5,}\b", first) if code in GRPC_CODES]
    if re.fullmatch(r"[A-Z_]+\.", first):  # "INVALID_ARGUMENT." alone: the code, not the meaning
        sentences = sentences[1:]
    meaning, advice = [], []
    for position, sentence in enumerate(sentences):
        # The first sentence always says what happened, whatever word it starts with.
        if position > 0 and _is_advice(sentence):
            advice.append(sentence)
            continue
        # "The code is consumed; start the flow again.": the clause after the semicolon is advice.
        head, separator, tail = sentence.rpartition("; ")
        if separator and _is_advice(tail[:1].upper() + tail[1:]):
            meaning.append(head + ".")
            advice.append(tail[:1].upper() + tail[1:])
        else:
            meaning.append(sentence)
    action = " ".join(advice)
    if not action and codes:
        action = DEFAULT_ACTION.get(codes[0], "See the meaning.")
    return codes, " ".join(meaning), action


def read_reasons(descriptor_set: descriptor_pb2.FileDescriptorSet) -> list[Reason]:
    """Every ErrorReason value except UNSPECIFIED, in number order, with its documentation."""
    file = next(f for f in descriptor_set.file if f.name == ERROR_REASON_FILE)
    enum_index = next(i for i, e in enumerate(file.enum_type) if e.name == "ErrorReason")
    comments = _comments(file)
    reasons: list[Reason] = []
    section = "Generic"
    for index, value in enumerate(file.enum_type[enum_index].value):
        location = comments.get((ENUM_TYPE, enum_index, ENUM_VALUE, index))
        if location is None:
            continue
        for detached in location.leading_detached_comments:
            found = SECTION.match(_clean(detached))
            if found:
                section = found.group(1)
        if value.number == 0:
            continue
        codes, meaning, action = split_comment(_clean(location.leading_comments))
        reasons.append(Reason(value.name.removeprefix(PREFIX), value.number, section, codes, meaning, action))
    return reasons


def _is_public(method: descriptor_pb2.MethodDescriptorProto) -> bool:
    """Whether the rpc's policy option says VISIBILITY_PUBLIC (read from the raw option bytes)."""
    raw = method.options.SerializeToString()
    # Decode MethodOptions' extension 51001 (a length-delimited MethodPolicy) by hand, so this
    # script needs no generated code: field 1 of MethodPolicy is visibility.
    position = 0
    while position < len(raw):
        key, position = _varint(raw, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, position = _varint(raw, position)
        elif wire_type == 2:
            length, position = _varint(raw, position)
            body = raw[position : position + length]
            position += length
            if number == POLICY_EXTENSION_FIELD:
                return _policy_visibility(body) == VISIBILITY_PUBLIC
        elif wire_type == 5:
            position += 4
        elif wire_type == 1:
            position += 8
        else:
            return False
    return False


def _policy_visibility(body: bytes) -> int:
    position = 0
    while position < len(body):
        key, position = _varint(body, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(body, position)
            if number == 1:
                return value
        elif wire_type == 2:
            length, position = _varint(body, position)
            position += length
        elif wire_type == 5:
            position += 4
        elif wire_type == 1:
            position += 8
        else:
            break
    return 0


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def attach_public_rpcs(reasons: list[Reason], descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
    """Note, per reason, the public rpcs whose doc comment (or service's) documents it."""
    by_wire = {reason.wire: reason for reason in reasons}
    for file in descriptor_set.file:
        if not file.name.startswith("openbank/"):
            continue
        comments = _comments(file)
        for s_index, service in enumerate(file.service):
            service_comment = comments.get((SERVICE, s_index))
            common = set(re.findall(r"\b[A-Z][A-Z_]+\b", service_comment.leading_comments if service_comment else ""))
            for m_index, method in enumerate(service.method):
                if not _is_public(method):
                    continue
                location = comments.get((SERVICE, s_index, METHOD, m_index))
                documented = set(re.findall(r"\b[A-Z][A-Z_]+\b", location.leading_comments if location else ""))
                for wire in (documented | common) & by_wire.keys():
                    by_wire[wire].public_rpcs.append(f"{service.name}.{method.name}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(reasons: list[Reason]) -> str:
    """The catalogue as Markdown."""
    lines = [
        "# Error reasons",
        "",
        "<!-- Generated by scripts/gen_error_catalogue.py from protos/openbank/common/v1/error_reason.proto.",
        "     Do not edit: change the proto comments and run `python scripts/gen_error_catalogue.py`. -->",
        "",
        "Every error of the mesh is a `google.rpc.Status` in the `grpc-status-details-bin` trailer whose",
        "details hold one `google.rpc.ErrorInfo`: `reason` is the wire reason below, `domain` names the",
        "service that answered (e.g. `account.openbank.dev`), `metadata` adds context. `BadRequest`",
        "comes with FIELD_INVALID, `RetryInfo` with retryable reasons, `QuotaFailure` with rate and",
        "quota reasons. Branch on the gRPC code and the reason, never on the message; treat an unknown",
        "reason like any other error of its gRPC code. Unless a reason says otherwise, retrying a",
        "mutating call is safe with the same `request_id`.",
        "",
        "The last column lists the public rpcs (reachable through the gateway) whose contract documents",
        "the reason; a reason with none is internal to the mesh (between its services, or operator",
        "calls) or can come from any rpc (INTERNAL_ERROR, SERVICE_UNAVAILABLE, gateway checks).",
        "",
    ]
    section = None
    for reason in reasons:
        if reason.section != section:
            section = reason.section
            lines += [
                f"## {section}",
                "",
                "| Reason | gRPC code | Meaning | What the caller should do | Public rpcs |",
                "|---|---|---|---|---|",
            ]
        rpcs = sorted(set(reason.public_rpcs))
        shown = ", ".join(rpcs) if len(rpcs) <= 6 else f"{len(rpcs)} rpcs (e.g. {', '.join(rpcs[:3])})"
        lines.append(
            f"| `{reason.wire}` ({reason.number}) | {' / '.join(reason.codes) or '-'} | {_cell(reason.meaning)} "
            f"| {_cell(reason.action)} | {shown or '-'} |"
        )
        next_index = reasons.index(reason) + 1
        if next_index == len(reasons) or reasons[next_index].section != section:
            lines.append("")
    return "\n".join(lines)


def generate() -> str:
    """The catalogue's Markdown from the current protos."""
    descriptor_set = compile_descriptor_set()
    reasons = read_reasons(descriptor_set)
    attach_public_rpcs(reasons, descriptor_set)
    return render(reasons)


def main(argv: list[str] | None = None) -> int:
    """Write the catalogue, or with --check compare it with the committed file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/error-reasons.md is stale")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run python scripts/gen_error_catalogue.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
