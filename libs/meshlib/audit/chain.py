"""The audit record's content, who made it, and the hash chain that makes it tamper-evident.

A record's hash is SHA-256 over its sequence number, the previous record's hash and its
content (the :data:`CHAINED_FIELDS`, as canonical JSON). Editing a record changes its hash;
deleting one leaves a gap in the sequence and a ``previous_hash`` that points nowhere;
swapping two breaks both links. A rewrite of the chain from some record on (every later
hash recomputed) is only caught against a head kept elsewhere: every seal logs the head,
and ``verify`` can be given one (``expected_head``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshlib.auth.context import Caller

GENESIS_HASH = "0" * 64
MAX_PROBLEMS = 100

# Processes of the mesh: an internal client named after one is a service, any other is an
# operator (the CLI's ``operator`` client, or a named operator's).
MESH_SERVICES = frozenset({"identity", "account", "payment", "settlement", "gateway"})

CHAINED_FIELDS = (
    "service",
    "occurred_at",
    "action",
    "outcome",
    "resource",
    "actor",
    "actor_kind",
    "client_id",
    "partner_id",
    "customer_id",
    "consent_id",
    "payment_id",
    "trace_id",
    "interaction_id",
    "details",
)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change, from the verified access token (never from a request field)."""

    kind: str  # partner | customer | operator | service | system
    subject: str
    client_id: str = ""
    partner_id: str | None = None
    customer_id: str | None = None
    consent_id: str | None = None


def actor_of(caller: Caller | None, service: str) -> Actor:
    """The actor behind ``caller``; the service itself (``system:<service>``) without one."""
    if caller is None:
        return Actor("system", f"system:{service}")
    if caller.partner_id:
        kind = "partner"
    elif caller.subject.startswith("service:"):
        kind = "service" if caller.subject.removeprefix("service:") in MESH_SERVICES else "operator"
    else:
        kind = "customer" if caller.customer_id else "operator"
    return Actor(
        kind,
        caller.subject,
        caller.client_id,
        partner_id=caller.partner_id,
        customer_id=caller.customer_id,
        consent_id=caller.consent_id,
    )


def timestamp_text(moment: dt.datetime) -> str:
    """A time as the chain hashes it: UTC, microseconds, ISO 8601."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


# One encoder for every record (json.dumps with options builds a new one per call).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def details_text(details: Mapping[str, Any] | None) -> str:
    """Details as canonical JSON (stored as is, so the hash never depends on re-encoding)."""
    return _CANONICAL.encode(dict(details) if details else {})


def record_hash(sequence: int, previous_hash: str, content: Mapping[str, Any]) -> str:
    """The hash of one record in the chain."""
    body = {name: content.get(name) or "" for name in CHAINED_FIELDS}
    body["sequence"] = sequence
    body["previous_hash"] = previous_hash
    canonical = _CANONICAL.encode(body)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class ChainReport:
    """What a verification found."""

    checked: int = 0
    unsealed: int = 0
    head_sequence: int = 0
    head_hash: str = GENESIS_HASH
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        """No problem found."""
        return not self.problems

    def problem(self, text: str) -> None:
        """Note a problem (the first :data:`MAX_PROBLEMS`; the rest are counted)."""
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        elif len(self.problems) == MAX_PROBLEMS:
            self.problems.append("more problems not listed")


class ChainVerifier:
    """Checks records fed in chain order, starting after ``(start_sequence, start_hash)``."""

    def __init__(
        self, start_sequence: int = 0, start_hash: str = GENESIS_HASH, *, anchor: tuple[int, str] | None = None
    ) -> None:
        self.report = ChainReport(head_sequence=start_sequence, head_hash=start_hash)
        self._sequence = start_sequence
        self._hash = start_hash
        # A head recorded earlier elsewhere (the SIEM): a rewrite of the chain is caught only so.
        self._anchor = anchor
        self._anchor_seen = anchor is None or anchor[0] <= start_sequence

    def feed(self, sequence: int, previous_hash: str, stored_hash: str, content: Mapping[str, Any]) -> None:
        """Check one record: its place, its link to the one before, its own hash."""
        report = self.report
        report.checked += 1
        if sequence != self._sequence + 1:
            if sequence > self._sequence + 1:
                missing = f"{self._sequence + 1}" + (f"-{sequence - 1}" if sequence - 1 > self._sequence + 1 else "")
                report.problem(f"record {missing} missing (deleted) before record {sequence}")
            else:
                report.problem(f"record {sequence} out of order after record {self._sequence} (reordered)")
        if previous_hash != self._hash:
            report.problem(
                f"record {sequence}: previous_hash does not match record {self._sequence} (deleted or reordered)"
            )
        if record_hash(sequence, previous_hash, content) != stored_hash:
            report.problem(f"record {sequence}: hash mismatch (edited)")
        if self._anchor is not None and sequence == self._anchor[0]:
            self._anchor_seen = True
            if stored_hash != self._anchor[1]:
                report.problem(f"record {sequence}: hash differs from the anchor kept (chain rewritten)")
        self._sequence, self._hash = sequence, stored_hash

    def finish(self, head_sequence: int | None = None, head_hash: str | None = None) -> ChainReport:
        """Compare the last record with the stored head (the tail of the chain was not cut)."""
        report = self.report
        if head_sequence is not None and (head_sequence, head_hash) != (self._sequence, self._hash):
            report.problem(
                f"chain head is record {head_sequence} but the last record kept is {self._sequence} "
                "(records at the end deleted or the head edited)"
            )
        if not self._anchor_seen and self._anchor is not None:
            report.problem(f"anchor record {self._anchor[0]} is not in the chain (records deleted)")
        report.head_sequence, report.head_hash = self._sequence, self._hash
        return report
