"""Where the payment service is in the scheme's feeds (the returns feed's cursor), on its database.

One row per feed. A replica reads a feed only while it holds the row's lease (taken when the
lease is free or expired, by a guarded update: one replica wins), and saves the cursor only
while it still holds it, so two replicas never both move the cursor; what one of them handled
twice after losing its lease is idempotent anyway (each return is a refund keyed by its id).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from meshlib.storage import Transactions
from services.payment.ports import Clock, utc_now
from services.payment.tables import clearing_feeds
from services.payment.unit_of_work import PaymentUnitOfWork

_f = clearing_feeds.c


class SqlClearingFeeds:
    """The feeds' cursors and leases."""

    def __init__(self, transactions: Transactions[PaymentUnitOfWork], clock: Clock = utc_now) -> None:
        self._tx = transactions
        self._clock = clock

    async def claim(self, feed: str, holder: str, lease: dt.timedelta) -> bool:
        """Hold the feed for ``lease`` unless another holder's lease is live."""

        async def take(uow: PaymentUnitOfWork) -> bool:
            now = self._clock()
            connection = uow.connection
            exists = await connection.scalar(sa.select(sa.func.count()).where(_f.feed == feed))
            if not exists:
                await connection.execute(
                    clearing_feeds.insert().values(feed=feed, cursor="", holder=holder, lease_until=now + lease)
                )
                return True
            taken = await connection.execute(
                clearing_feeds.update()
                .where(
                    _f.feed == feed,
                    sa.or_(_f.lease_until.is_(None), _f.lease_until < now, _f.holder == holder),
                )
                .values(holder=holder, lease_until=now + lease)
            )
            return taken.rowcount == 1

        return await self._tx.run(take)

    async def cursor(self, feed: str) -> str:
        """The position after the last handled item ("" from the start)."""
        found = await self._tx.read(lambda uow: uow.connection.scalar(sa.select(_f.cursor).where(_f.feed == feed)))
        return found or ""

    async def save(self, feed: str, holder: str, cursor: str) -> bool:
        """Keep the cursor, if ``holder`` still holds the feed; False when it lost it."""

        async def keep(uow: PaymentUnitOfWork) -> bool:
            saved = await uow.connection.execute(
                clearing_feeds.update()
                .where(_f.feed == feed, _f.holder == holder, _f.lease_until >= self._clock())
                .values(cursor=cursor, updated_at=self._clock())
            )
            return saved.rowcount == 1

        return await self._tx.run(keep)

    async def release(self, feed: str, holder: str) -> None:
        """Let the feed go (another replica may take it at once)."""

        async def free(uow: PaymentUnitOfWork) -> None:
            await uow.connection.execute(
                clearing_feeds.update().where(_f.feed == feed, _f.holder == holder).values(lease_until=None)
            )

        await self._tx.run(free)
