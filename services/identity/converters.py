"""Protobuf <-> domain conversions for identity (no rules here)."""

from __future__ import annotations

import json
from typing import Any

from openbank.identity.v1 import token_pb2


def jwks_response(key_set: dict[str, Any]) -> token_pb2.GetJwksResponse:
    """The JWKS as both typed keys and the raw JSON document."""
    return token_pb2.GetJwksResponse(
        keys=[
            token_pb2.JsonWebKey(
                kid=k["kid"], kty=k["kty"], crv=k["crv"], x=k["x"], y=k["y"], alg=k["alg"], use=k["use"]
            )
            for k in key_set["keys"]
        ],
        jwks_json=json.dumps(key_set, separators=(",", ":")),
    )
