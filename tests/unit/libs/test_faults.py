"""A lost store or peer is answered UNAVAILABLE with RetryInfo; a bug stays INTERNAL."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest
import redis.exceptions
from google.rpc import error_details_pb2
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from meshlib.errors import ErrorKind
from meshlib.faults import PEER_UNAVAILABLE, STORE_UNAVAILABLE, as_unavailable
from meshlib.grpc_errors import ErrorMappingInterceptor, decode_item_error, decode_status, error_info


def _wrapped(orig: BaseException, cls: type[DBAPIError] = DBAPIError, invalidated: bool = False) -> DBAPIError:
    return cls("SELECT 1", {}, orig, connection_invalidated=invalidated)


def _raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as cause:
            raise outer from cause
    except BaseException as error:
        return error


LOST_STORE = [
    ConnectionRefusedError(111, "Connect call failed"),
    OSError("Multiple exceptions: [Errno 111] Connect call failed, [Errno 99] Cannot assign"),
    TimeoutError(),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.InterfaceError("connection is closed"),
    _wrapped(asyncpg.exceptions.InterfaceError("connection is closed"), InterfaceError),
    _wrapped(asyncpg.exceptions.CannotConnectNowError("starting up"), OperationalError),
    _wrapped(Exception("server closed the connection unexpectedly"), invalidated=True),
    redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379"),
    redis.exceptions.TimeoutError("Timeout reading from socket"),
    redis.exceptions.ClusterDownError("CLUSTERDOWN"),
    _raised_from(RuntimeError("while saving"), asyncpg.exceptions.CannotConnectNowError("starting up")),
]


@pytest.mark.parametrize("error", LOST_STORE, ids=lambda error: type(error).__name__)
def test_a_lost_store_is_unavailable_with_a_retry_delay(error: BaseException) -> None:
    fault = as_unavailable(error)
    assert fault is not None
    assert fault.kind is ErrorKind.UNAVAILABLE
    assert fault.reason == STORE_UNAVAILABLE
    assert fault.retry_after_seconds and fault.retry_after_seconds > 0


def test_a_peer_that_does_not_answer_is_peer_unavailable() -> None:
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="down")
        fault = as_unavailable(error)
        assert fault is not None and fault.reason == PEER_UNAVAILABLE


BUGS = [
    ValueError("bad value"),
    KeyError("missing"),
    FileNotFoundError(2, "No such file"),
    _wrapped(asyncpg.exceptions.UniqueViolationError("duplicate key"), IntegrityError),
    _wrapped(asyncpg.exceptions.PostgresSyntaxError("syntax error")),
    redis.exceptions.ResponseError("WRONGTYPE"),
    grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(), details="bug"),
]


@pytest.mark.parametrize("error", BUGS, ids=lambda error: type(error).__name__)
def test_a_bug_stays_internal(error: BaseException) -> None:
    assert as_unavailable(error) is None


class _AbortedCall(Exception):
    pass


class _Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.trailers: tuple = ()

    async def abort(self, code: grpc.StatusCode, details: str, trailers: tuple) -> None:
        self.code, self.trailers = code, trailers
        raise _AbortedCall


def test_the_error_mapping_answers_a_lost_database_unavailable_with_retry_info() -> None:
    context = _Context()
    lost = _wrapped(asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"), OperationalError)
    with pytest.raises(_AbortedCall):
        asyncio.run(ErrorMappingInterceptor("account.openbank.dev")._fail(context, "/m", lost))  # type: ignore[arg-type]
    assert context.code == grpc.StatusCode.UNAVAILABLE
    status = decode_status(context.trailers)
    info = error_info(status)
    assert info is not None and info.reason == STORE_UNAVAILABLE
    assert status is not None
    assert any(detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for detail in status.details)


@pytest.mark.parametrize(
    "reason", ["STORE_UNAVAILABLE", "PEER_UNAVAILABLE", "UPSTREAM_UNAVAILABLE", "UPSTREAM_TIMEOUT"]
)
def test_a_fault_reason_is_transient_for_a_caller_never_a_refusal(reason: str) -> None:
    from openbank.common.v1 import error_reason_pb2
    from services.payment.domain.saga import Step, StepRecord

    # A saga step that met a lost store downstream did not happen and may happen yet: no refusal.
    assert not StepRecord.failure(next(iter(Step)), reason, "the store is away").refused
    # A batch item failing so is retried like SERVICE_UNAVAILABLE, not taken as a rule's answer.
    item = decode_item_error(error_reason_pb2.ErrorReason.Value(f"ERROR_REASON_{reason}"), "away")
    assert item.kind is ErrorKind.UNAVAILABLE
