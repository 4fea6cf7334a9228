"""What every conformance check uses: the failure, and the two ways a check asserts."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc

try:  # the SDK is its own package in sdk/; a source checkout may not have it installed
    import openbank_sdk as ob
except ImportError:  # pragma: no cover - depends on the install
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk"))
    import openbank_sdk as ob


class CheckFailed(Exception):
    """A check saw something the contract does not allow."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def _describe(error: ob.OpenBankError) -> str:
    return f"{error.code.name} {error.reason or '(no reason)'}"


async def expect_error(
    operation: Awaitable[Any], code: grpc.StatusCode, reason: str, *, bad_request_field: str | None = None
) -> str:
    """Run ``operation``; it must fail with ``code`` and ErrorInfo ``reason`` (and a BadRequest)."""
    try:
        await operation
    except ob.OpenBankError as error:
        _expect(error.code == code and error.reason == reason, f"got {_describe(error)}, want {code.name} {reason}")
        if bad_request_field is not None:
            fields = [v.field for v in error.field_violations]
            _expect(bad_request_field in fields, f"BadRequest names {fields}, want {bad_request_field!r}")
        return f"{code.name} {reason}" + (f", BadRequest {bad_request_field}" if bad_request_field else "")
    raise CheckFailed(f"succeeded, want {code.name} {reason}")
