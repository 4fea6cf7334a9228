"""The gateway reads the client id of a token request (unverified) to key the per-client
limit; an id identity would refuse for its text keys no bucket."""

from __future__ import annotations

from gateway.client_limit import client_id_readers
from gateway.routing import build_routes
from openbank.identity.v1 import token_pb2

ISSUE = "/openbank.identity.v1.TokenService/IssueToken"


def test_a_client_id_identity_would_refuse_keys_no_bucket() -> None:
    read = client_id_readers(build_routes())[ISSUE]

    def body(client_id: str) -> bytes:
        return token_pb2.IssueTokenRequest(client_id=client_id).SerializeToString()

    assert read(body("obc_0123456789abcdef")) == "obc_0123456789abcdef"
    for refused in ("obc\x00", "obc 1", "x" * 65, "é"):
        assert read(body(refused)) == "", refused
    assert read(b"\xff\xff") == ""  # not a message at all: identity answers it
