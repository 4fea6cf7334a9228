"""Resource names (AIP-122): ``collection/{id}`` parsing and building."""

from __future__ import annotations

import re

from meshlib.errors import FieldCollector, InvalidArgument

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def resource_name(collection: str, resource_id: str) -> str:
    """Build ``collection/id``."""
    return f"{collection}/{resource_id}"


def parse_name(name: str, collection: str, field: str = "name", errors: FieldCollector | None = None) -> str:
    """The id inside ``collection/{id}``; a malformed name is INVALID_ARGUMENT naming the field."""
    prefix = f"{collection}/"
    resource_id = name[len(prefix) :] if name.startswith(prefix) else ""
    if not ID_PATTERN.match(resource_id):
        message = f"must look like {collection}/{{id}}"
        if errors is None:
            raise InvalidArgument.field(field, message)
        errors.add(field, message)
        return ""
    return resource_id
