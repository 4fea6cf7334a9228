"""AIP-158 pagination: page sizes and opaque, filter-bound page tokens.

A token is base64url JSON of the cursor (the last row's sort key) plus a hash of the
filters it was issued for; a token used with other filters, or garbage, is
INVALID_ARGUMENT ``PAGE_TOKEN_INVALID``. Keyset cursors keep pages stable under concurrent
inserts.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from typing import Any

from meshlib.errors import InvalidArgument
from meshlib.request_text import TextKind, TextRule, string_problem

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """0 means the default, above the maximum is coerced down, negative is rejected."""
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    if requested == 0:
        return default
    return min(requested, maximum)


def filter_fingerprint(**filters: Any) -> str:
    """A short hash of the filters a listing was asked with."""
    canonical = json.dumps(filters, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_page_token(cursor: dict[str, Any], filters_hash: str) -> str:
    """Make an opaque token for the next page."""
    raw = json.dumps({"c": cursor, "f": filters_hash}, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, filters_hash: str) -> dict[str, Any] | None:
    """The cursor inside a token (None for the first page); rejects forged or mismatched tokens."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        cursor, issued_for = payload["c"], payload["f"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument.field(
            "page_token", "not a token this server issued", reason="PAGE_TOKEN_INVALID"
        ) from None
    if issued_for != filters_hash or not isinstance(cursor, dict):
        raise InvalidArgument.field(
            "page_token", "was issued for a different request; keep the filters unchanged", reason="PAGE_TOKEN_INVALID"
        )
    if not all(_storable(value) for value in cursor.values()):
        # A forged token (the filter hash is no secret) must not carry into a query what a
        # store cannot hold: a NUL is an error on PostgreSQL and a match on SQLite.
        raise InvalidArgument.field("page_token", "not a token this server issued", reason="PAGE_TOKEN_INVALID")
    return cursor


_CURSOR_TEXT = TextRule(TextKind.TOKEN, 128)  # ids and ISO timestamps, as the services issue them


def _storable(value: Any) -> bool:
    """A cursor value the services issue: a 64-bit integer or a short visible-ASCII string."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, str) and string_problem(value, _CURSOR_TEXT) is None


def time_and_id(cursor: dict[str, Any] | None) -> tuple[dt.datetime, str] | None:
    """The ``{"t": <ISO time>, "id": <id>}`` keyset cursor of a page token, or None on the first page."""
    if cursor is None:
        return None
    try:
        return dt.datetime.fromisoformat(cursor["t"]), str(cursor["id"])
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument.field(
            "page_token", "not a token this server issued", reason="PAGE_TOKEN_INVALID"
        ) from None
