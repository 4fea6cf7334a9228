"""A lost store or peer answered as a page, not a crash: while identity, account or payment
does not answer (restarting, failing over, cut off) or the session store (Redis) is gone,
every page answers ``503 Service Unavailable`` with the bank's own error page and a
``Retry-After``, logged as a warning naming the reason, instead of a 500 and a traceback.

Recognised as in every service (:func:`meshlib.faults.as_unavailable`): a peer's UNAVAILABLE or
deadline, already decoded to an UNAVAILABLE :class:`meshlib.errors.MeshError` or not, and a
store's lost connection anywhere in the exception's cause chain. Anything else is a bug and
still fails loudly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from meshlib.errors import ErrorKind, MeshError, Unavailable
from meshlib.faults import as_unavailable

log = logging.getLogger("bankweb.faults")

TITLE = "The bank is not available right now"
DETAIL = "Nothing was changed. Please try again in a moment."


def lost_dependency(error: BaseException) -> MeshError | None:
    """The fault behind ``error`` when it is a lost store or peer; None for anything else."""
    if isinstance(error, MeshError):
        return error if error.kind is ErrorKind.UNAVAILABLE else None
    return as_unavailable(error)


class LostDependencyPages:
    """ASGI middleware: a request that fails on a lost store or peer before any answer started
    gets ``page()`` (the site's error page) with status 503 and a Retry-After."""

    def __init__(self, app: Any, page: Callable[[str, str, int], Response]) -> None:
        self.app = app
        self.page = page

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as error:
            fault = lost_dependency(error)
            if fault is None or started:
                raise
            log.warning("page answered 503: a dependency is unavailable", extra={"reason": fault.reason})
            response = self.page(TITLE, DETAIL, 503)
            retry = fault.retry_after_seconds if isinstance(fault, Unavailable) else None
            response.headers["Retry-After"] = str(max(1, math.ceil(retry or 1)))
            await response(scope, receive, send)
