"""The per-client limit of the token endpoint, beside the per-address one.

A token request carries no bearer token, so the gateway knows only the address it came
from; a flood spread over many addresses in one client's name would never meet the
per-address limit. The request body names the client (``client_id``), so routes that take
no token and whose request has a ``client_id`` are limited per client too, in the class
``<rate class>_per_client`` of the default tier (the client is not authenticated yet, so
its own tier is unknown). The id is read unverified: that is enough to key a limit, and a
sender can only spend the budget of the client it names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from gateway.routing import Route
from meshlib.request_text import FIELD_RULES, string_problem

# Identity refuses a client id its text rule refuses (FIELD_INVALID: too long, control
# characters); such an id is not worth a bucket.
CLIENT_ID_RULE = FIELD_RULES["client_id"]
ClientIdReader = Callable[[bytes], str]


def per_client_class(rate_class: str) -> str:
    """The rate-limit class of a route's per-client limit."""
    return f"{rate_class}_per_client"


def client_id_readers(routes: Mapping[str, Route]) -> dict[str, ClientIdReader]:
    """For each tokenless route whose request has a ``client_id``: how to read it from the raw body."""
    readers: dict[str, ClientIdReader] = {}
    pool = descriptor_pool.Default()
    for path, route in routes.items():
        if route.policy.requires_token:
            continue
        descriptor = pool.FindMessageTypeByName(route.policy.input_type)
        if "client_id" in descriptor.fields_by_name:
            readers[path] = _reader(message_factory.GetMessageClass(descriptor))
    return readers


def _reader(message_class: type) -> ClientIdReader:
    def read(raw: bytes) -> str:
        try:
            client_id = message_class.FromString(raw).client_id
        except DecodeError:
            return ""  # identity answers the malformed request
        return client_id if string_problem(client_id, CLIENT_ID_RULE) is None else ""

    return read
