"""The SDK's decoupled-flow poller without a mesh: it waits the interval before each poll,
takes the bank's new interval from RetryInfo on AUTHORIZATION_PENDING and SLOW_DOWN (or adds
five seconds when none came), returns the session on approval and raises any other refusal."""

from __future__ import annotations

from typing import Any

import grpc
import openbank_sdk as ob
import pytest
from openbank_sdk.decoupled import DecoupledAuthorization

pytestmark = pytest.mark.asyncio


class ScriptedWallet(ob.OpenBankClient):
    """An OpenBankClient whose polls answer from a script."""

    def __init__(self, answers: list[Any]) -> None:  # no channel: nothing is sent
        self.answers = answers

    async def poll_decoupled_authorization(self, started: DecoupledAuthorization, scopes: Any = ()) -> Any:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _error(kind: type[ob.OpenBankError], code: grpc.StatusCode, reason: str, **fields: Any) -> ob.OpenBankError:
    return kind(code, reason.lower(), reason=reason, **fields)


def pending(**fields: Any) -> ob.OpenBankError:
    return _error(ob.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, "AUTHORIZATION_PENDING", **fields)


def slow_down(**fields: Any) -> ob.OpenBankError:
    return _error(ob.RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED, "SLOW_DOWN", **fields)


STARTED = DecoupledAuthorization("consents/c1", "req-1", 600, 5, "Acme 4F2K")


async def test_the_poller_keeps_the_banks_pace_and_returns_the_session() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    wallet = ScriptedWallet(
        [
            pending(retry_after=5),
            slow_down(retry_after=10),
            slow_down(),  # no RetryInfo: five seconds more
            "the session",
        ]
    )
    assert await wallet.wait_for_decoupled_authorization(STARTED, sleep=sleep) == "the session"
    assert waits == [5, 5, 10, 15]


@pytest.mark.parametrize(
    "refusal",
    [
        _error(ob.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, "ACCESS_DENIED"),
        _error(ob.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, "EXPIRED_TOKEN"),
        _error(ob.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, "CONSENT_REVOKED"),
        _error(ob.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_GRANT"),
    ],
)
async def test_any_other_answer_ends_the_wait(refusal: ob.OpenBankError) -> None:
    async def sleep(seconds: float) -> None:
        pass

    wallet = ScriptedWallet([pending(), refusal])
    with pytest.raises(type(refusal)) as ended:
        await wallet.wait_for_decoupled_authorization(STARTED, sleep=sleep)
    assert ended.value.reason == refusal.reason and wallet.answers == []
