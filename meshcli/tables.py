"""How operator commands print what they list: a table with headers for people, or JSON lines
(``--json``, one object per row, the protobuf JSON mapping) for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns as wide as their widest cell, a header line, a rule under it."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(value.ljust(width) for value, width in zip(values, widths, strict=True)).rstrip()

    print(line(headers))
    print(line(["-" * width for width in widths]))
    for row in cells:
        print(line(row))


def print_json_lines(items: Sequence[Message | dict[str, Any]]) -> None:
    """One JSON object per line (field names as in the proto)."""
    for item in items:
        value = item if isinstance(item, dict) else json_format.MessageToDict(item, preserving_proto_field_name=True)
        print(json.dumps(value, sort_keys=True))
