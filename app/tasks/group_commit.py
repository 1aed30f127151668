"""Group commit: concurrent small writes share one transaction and one commit.

Each caller is answered only once the transaction holding its write has committed, so what
it was told is durable. While one group commits, the next gathers. If a group fails, each
of its writes is tried again on its own, so one bad write never costs the others theirs; if
the database is out, the whole group is told so at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Generic, TypeVar

from app.errors import DatabaseUnavailable

Tx = TypeVar("Tx")
Item = TypeVar("Item")
Result = TypeVar("Result")
MAX_GROUP = 200


class GroupCommit(Generic[Tx, Item, Result]):
    """write_group(tx, items) -> one result per item, in order, all in transaction tx, which
    `transaction()` opens and commits as its block ends."""

    def __init__(
        self,
        transaction: Callable[[], AbstractAsyncContextManager[Tx]],
        write_group: Callable[[Tx, list[Item]], Awaitable[list[Result]]],
    ) -> None:
        self.transaction, self.write_group = transaction, write_group
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._running: asyncio.Task[None] | None = None

    async def run(self, item: Item) -> Result:
        """item's result, once the transaction it was written in has committed."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._running is None:
            self._running = asyncio.create_task(self._drain())
        # A caller that goes away cancels only its own future: the group goes on, and is not
        # awaited by anyone but its own task (`_drain` answers only futures still waiting).
        return await future

    async def idle(self, within_s: float) -> None:
        """Return once no group is gathering or committing, or after within_s at the latest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while self._running is not None and (left := deadline - loop.time()) > 0:
            await asyncio.wait({self._running}, timeout=left)  # waits for it, never cancels it

    async def _drain(self) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
                if not await self._commit(group):
                    for one in group:
                        await self._commit([one])
        finally:
            self._running = None

    async def _commit(self, group: list[tuple[Item, asyncio.Future[Result]]]) -> bool:
        """Write and commit the group; False, with nobody answered, if it failed and can be split."""
        try:
            async with self.transaction() as tx:
                results = await self.write_group(tx, [item for item, _ in group])
        except Exception as exc:
            # An outage fails every write alike: tried one by one, each would only wait it out again.
            if len(group) > 1 and not isinstance(exc, DatabaseUnavailable):
                return False
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return True
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():
                future.set_result(result)
        return True
