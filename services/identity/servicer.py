"""gRPC servicers for identity: protobuf in, protobuf out, nothing else."""

from __future__ import annotations

import grpc

from openbank.identity.v1 import token_pb2, token_pb2_grpc
from services.identity import converters
from services.identity.keys_service import KeyService


class TokenServicer(token_pb2_grpc.TokenServiceServicer):
    """OAuth2 token endpoint and the JWKS."""

    def __init__(self, keys: KeyService) -> None:
        self._keys = keys

    async def GetJwks(
        self, request: token_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> token_pb2.GetJwksResponse:
        """The public keys that verify access tokens."""
        return converters.jwks_response(await self._keys.jwks())
