"""Fetch identity's JWKS over gRPC (``TokenService.GetJwks``) for the shared verifier."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

JWKS_FETCH_TIMEOUT_SECONDS = 2.0


def identity_jwks_fetcher(channel: grpc.aio.Channel) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A fetcher that asks the identity service for its current public keys."""
    from openbank.identity.v1 import token_pb2, token_pb2_grpc

    stub = token_pb2_grpc.TokenServiceStub(channel)

    async def fetch() -> dict[str, Any]:
        response = await stub.GetJwks(token_pb2.GetJwksRequest(), timeout=JWKS_FETCH_TIMEOUT_SECONDS)
        return json.loads(response.jwks_json)

    return fetch
