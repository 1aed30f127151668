"""Waking waiters when a task changes: in this process directly, across replicas through
PostgreSQL LISTEN/NOTIFY, and everywhere through a short database re-check as a fallback.

A waiter never holds a database connection while it waits: it reads, then sleeps on an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

CHANNEL = "imagehook_tasks"
# Without notifications (another replica on SQLite's file, or a lost LISTEN connection) a
# waiter still sees a change within this long.
RECHECK_S = 0.5


class TaskWatch:
    """In-process publish/subscribe of task ids."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    def publish(self, task_id: str) -> None:
        for event in self._waiters.get(task_id, ()):
            event.set()

    @contextlib.contextmanager
    def watch(self, task_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters[task_id].add(event)
        try:
            yield event
        finally:
            self._waiters[task_id].discard(event)
            if not self._waiters[task_id]:
                del self._waiters[task_id]


async def sleep_until_changed(event: asyncio.Event, timeout_s: float) -> None:
    """Wait for a publish or the re-check interval, whichever is first."""
    event.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), min(timeout_s, RECHECK_S))


async def listen_postgres(database_url: str, watch: TaskWatch) -> None:
    """Relay NOTIFYs from every replica into this process's TaskWatch, reconnecting forever."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    while True:
        try:
            connection = await asyncpg.connect(dsn)
            try:
                await connection.add_listener(CHANNEL, lambda _c, _pid, _ch, task_id: watch.publish(task_id))
                while not connection.is_closed():
                    await asyncio.sleep(5)
            finally:
                await connection.close()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the re-check fallback covers the gap; keep trying
            log.warning("LISTEN connection lost (%s); reconnecting", type(exc).__name__)
            await asyncio.sleep(2)
