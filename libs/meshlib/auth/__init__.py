"""Authentication for every process: the one token verifier, the caller context, and the
one server interceptor that enforces tokens and per-rpc scopes from the contract."""

from meshlib.auth.context import Caller, current_caller, require_caller
from meshlib.auth.verifier import JwksCache, JwtVerifier, VerifierSettings

__all__ = ["Caller", "JwksCache", "JwtVerifier", "VerifierSettings", "current_caller", "require_caller"]
