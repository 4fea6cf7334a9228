"""The partner's event log (``openbank.events.v1``): a resumable stream that keeps its cursor,
and aggregated polling.

    events = PartnerEvents(client, FileCursorStore("events.cursor"))
    async for event in events.stream():          # resumes where the last run stopped
        handle(event)                            # the cursor is saved once you ask for the next

The stream reconnects after a broken connection, a replica going away or an expired token,
always from the cursor of the last event handed out, so nothing is missed or repeated. The
cursor is saved when the loop asks for the next event, i.e. after ``handle`` returned: a crash
inside ``handle`` gets that event again on the next run (at least once for your code, exactly
once from the bank).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import grpc

from openbank.events.v1 import events_pb2, events_pb2_grpc
from openbank_sdk.auth import ClientCredentialsTokens
from openbank_sdk.errors import OpenBankError, from_rpc_error

if TYPE_CHECKING:
    from openbank_sdk.client import OpenBankClient

EVENTS_SCOPE = "events:read"
# The stream ends at the token's expiry: a new token and the same cursor continue it.
_RENEW = frozenset({"TOKEN_EXPIRED"})
_RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class CursorStore(Protocol):
    """Where the cursor of the last handled event is kept."""

    def load(self) -> str:
        """The saved cursor ("" before the first event)."""

    def save(self, cursor: str) -> None:
        """Keep ``cursor``."""


class MemoryCursorStore:
    """A cursor kept in memory (resumes across reconnects, not across restarts)."""

    def __init__(self, cursor: str = "") -> None:
        self.cursor = cursor

    def load(self) -> str:
        """The cursor."""
        return self.cursor

    def save(self, cursor: str) -> None:
        """Keep it."""
        self.cursor = cursor


class FileCursorStore:
    """A cursor kept in a file, replaced atomically (survives restarts)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> str:
        """The saved cursor, or "" when there is no file yet."""
        try:
            return self.path.read_text().strip()
        except FileNotFoundError:
            return ""

    def save(self, cursor: str) -> None:
        """Write to a temporary file beside it, then rename over it."""
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        with os.fdopen(handle, "w") as out:
            out.write(cursor)
        os.replace(temporary, self.path)


class PartnerEvents:
    """The partner's events through ``client``'s gateway, with a token of scope ``events:read``."""

    def __init__(self, client: OpenBankClient, store: CursorStore | None = None) -> None:
        self._client = client
        self.store: CursorStore = store or MemoryCursorStore()
        self._stub = events_pb2_grpc.EventServiceStub(client.channel)
        self.tokens = ClientCredentialsTokens(
            client.channel, client.credentials, (EVENTS_SCOPE,), retry=client.invoker.retry
        )

    async def stream(
        self, *, types: Sequence[int] = (), consents: Sequence[str] = (), max_reconnects: int = 10
    ) -> AsyncIterator[events_pb2.Event]:
        """The events after the stored cursor (none stored: from now on), then live, for ever.

        ``max_reconnects`` consecutive failures without an event raise the last error; an
        error that a reconnect cannot cure (CURSOR_EXPIRED: resynchronise, then store
        the error's ``oldest_cursor``; PARTNER_SUSPENDED) is raised at once.
        """
        failures = 0
        while True:
            request = events_pb2.StreamEventsRequest(after_cursor=self.store.load(), types=types, consents=consents)
            call = self._stub.StreamEvents(
                request, metadata=await self._client.invoker.metadata(self.tokens, str(uuid.uuid4()))
            )
            error: OpenBankError | None = None
            try:
                async for response in call:
                    failures = 0
                    yield response.event
                    self.store.save(response.event.cursor)  # the caller handled it
            except grpc.aio.AioRpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                if error.reason in _RENEW:
                    await self.tokens.refresh()
                elif error.code not in _RETRIED:
                    raise error from None
            finally:
                call.cancel()
            failures += 1
            if failures > max_reconnects:
                if error is not None:
                    raise error
                return
            retry = self._client.invoker.retry
            await asyncio.sleep(retry.backoff(failures, error.retry_after if error else None))

    async def poll(
        self,
        *,
        ack_cursor: str = "",
        after_cursor: str = "",
        max_events: int = 0,
        types: Sequence[int] = (),
        consents: Sequence[str] = (),
        request_id: str = "",
    ) -> events_pb2.PollEventsResponse:
        """Aggregated polling: acknowledge up to ``ack_cursor``, then the next page."""
        request = events_pb2.PollEventsRequest(
            request_id=request_id,
            ack_cursor=ack_cursor,
            after_cursor=after_cursor,
            max_events=max_events,
            types=types,
            consents=consents,
        )
        return await self._client.invoker.unary(self._stub.PollEvents, request, self.tokens, mutating=True)

    async def set_endpoint(
        self,
        target: str,
        *,
        insecure: bool = False,
        max_attempts: int = 0,
        after_cursor: str = "",
        request_id: str = "",
    ) -> events_pb2.EventEndpoint:
        """Register (or replace) your EventReceiverService at ``target`` (``host:port``): the
        bank then pushes each new event to it, signed (verify with the bank's JWKS)."""
        request = events_pb2.SetEventEndpointRequest(
            request_id=request_id,
            endpoint=events_pb2.EventEndpoint(target=target, insecure=insecure, max_attempts=max_attempts),
            after_cursor=after_cursor,
        )
        return (
            await self._client.invoker.unary(self._stub.SetEventEndpoint, request, self.tokens, mutating=True)
        ).endpoint

    async def get_endpoint(self) -> events_pb2.EventEndpoint:
        """Your push endpoint and its delivery status (NotFound when none is registered)."""
        request = events_pb2.GetEventEndpointRequest()
        return (await self._client.invoker.unary(self._stub.GetEventEndpoint, request, self.tokens)).endpoint
