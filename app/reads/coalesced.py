"""A value per key that many readers want and that may be a moment old: read at most once per `ttl_s`,
by one read at a time. Once a key has a value, no reader waits for it again: one that finds it stale
gets it as it is while a read runs in the background (stale-while-revalidate), unless it asks for a
value whose read began after a given moment, which it then waits for."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class Coalesced(Generic[V]):
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._values: dict[str, tuple[float, V]] = {}  # key: (when its read began, time.monotonic(); value)
        self._reads: dict[str, tuple[float, asyncio.Task[V]]] = {}  # key: the read running, and when it began

    async def get(self, key: str, read: Callable[[], Awaitable[V]], *, begun_after: float = -1.0) -> V:
        """The key's value, from a read begun after `begun_after` (monotonic time); one at hand that is
        ttl_s old is returned all the same, and read again in the background."""
        found = self._values.get(key)
        if found is not None and found[0] > begun_after:
            self._refresh_if_stale(key, read, found[0])
            return found[1]
        return await asyncio.shield(self._reading(key, read, begun_after))

    def peek(self, key: str, read: Callable[[], Awaitable[V]]) -> V | None:
        """The key's value at hand, if any, without waiting; read again in the background once ttl_s old."""
        found = self._values.get(key)
        self._refresh_if_stale(key, read, -math.inf if found is None else found[0])
        return None if found is None else found[1]

    def _refresh_if_stale(self, key: str, read: Callable[[], Awaitable[V]], begun: float) -> None:
        if begun < time.monotonic() - self.ttl_s:
            self._reading(key, read, begun).add_done_callback(_retrieved)

    def _reading(self, key: str, read: Callable[[], Awaitable[V]], begun_after: float) -> asyncio.Task[V]:
        """The read of the key running now if it began after `begun_after`, else a new one."""
        running = self._reads.get(key)
        if running is not None and running[0] > begun_after:
            return running[1]
        begun = time.monotonic()
        task = asyncio.create_task(self._read(key, read, begun))
        self._reads[key] = (begun, task)
        return task

    async def _read(self, key: str, read: Callable[[], Awaitable[V]], begun: float) -> V:
        try:
            value = await read()
        finally:
            if self._reads.get(key, (None,))[0] == begun:
                del self._reads[key]
        if key not in self._values or self._values[key][0] < begun:
            self._values[key] = (begun, value)
        return value


def _retrieved(task: asyncio.Task[object]) -> None:
    """A background read that failed (the database is out, say) leaves the value as it was."""
    with contextlib.suppress(asyncio.CancelledError):
        task.exception()
