"""AIP-158 pagination as async iterators: every item of every page, fetched lazily."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any


async def paginate(fetch: Callable[[Any], Awaitable[Any]], request: Any, items_field: str) -> AsyncIterator[Any]:
    """Yield the items of ``items_field`` from every page of a List rpc.

    ``fetch`` sends one request and returns its response; ``request`` is the first page's
    request (its ``page_token`` is set from each ``next_page_token`` in turn, the other fields
    stay unchanged, as AIP-158 requires).
    """
    page = type(request)()
    page.CopyFrom(request)
    while True:
        response = await fetch(page)
        for item in getattr(response, items_field):
            yield item
        if not response.next_page_token:
            return
        page.page_token = response.next_page_token


async def collect(iterator: AsyncIterator[Any], limit: int | None = None) -> list[Any]:
    """Gather an async iterator into a list (at most ``limit`` items when given)."""
    items: list[Any] = []
    async for item in iterator:
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    return items
