"""Waking waiters when a task changes: in this process directly, across replicas and processes
through PostgreSQL LISTEN/NOTIFY or SQLite's task_changes, and everywhere through a short
database re-check as a fallback.

A waiter never holds a database connection while it waits: it reads, then sleeps on an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator

import asyncpg

from app.db.engine import asyncpg_bounds, asyncpg_dsn
from app.db.sqlite_thread import SqliteThread
from app.reads.status_cache import StatusCache

log = logging.getLogger(__name__)

CHANNEL = "imagehook_tasks"
# Without notifications (a lost LISTEN connection, a SQLite watcher that failed) a waiter still
# sees a change within this long.
RECHECK_S = 0.5
# On SQLite, a commit by another process is noticed (its tasks' cached statuses dropped) within this long.
FRESHNESS_POLL_S = 0.1
# How often the LISTEN connection proves it is alive: a partition is noticed within this plus the timeout.
HEARTBEAT_S = 1.0
# How the LISTEN connection shows in pg_stat_activity.
LISTENER_NAME = "imagehook listen"
CHANGES_AFTER = "SELECT seq, task_id FROM task_changes WHERE seq > ? ORDER BY seq"
# The largest seq task_changes ever gave, pruned or not (SQLite keeps it for AUTOINCREMENT); 0 before the first.
LAST_SEQ = "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'task_changes'), 0)"


class TaskWatch:
    """In-process publish/subscribe of task ids."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        # Set as the process shuts down: every watcher wakes to answer with what it has, and goes.
        self.draining = False

    def publish(self, task_id: str) -> None:
        for event in self._waiters.get(task_id, ()):
            event.set()

    def drain(self) -> None:
        self.draining = True
        for events in self._waiters.values():
            for event in events:
                event.set()

    @contextlib.contextmanager
    def watch(self, task_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        if self.draining:
            event.set()
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


async def listen_postgres(
    database_url: str, on_change: Callable[[str], None], cache: StatusCache, timeout_s: float | None
) -> None:
    """Relay NOTIFYs from every replica to on_change, reconnecting forever. The status cache
    is on only while they are heard: a NOTIFY lost with the connection is a change missed.
    timeout_s bounds connecting and each heartbeat (see app/db/engine.py)."""
    dsn = asyncpg_dsn(database_url)

    async def listen() -> None:
        connection = await asyncpg.connect(
            dsn, server_settings={"application_name": LISTENER_NAME}, **asyncpg_bounds(timeout_s)
        )
        try:
            await connection.add_listener(CHANNEL, lambda _c, _pid, _ch, task_id: on_change(task_id))
            cache.enable(True)
            while True:
                await asyncio.sleep(HEARTBEAT_S)
                # A line cut without a reset shows no error by itself: a heartbeat not answered in time does.
                await connection.execute("SELECT 1")
        finally:
            with contextlib.suppress(Exception):  # after a timeout, close() gives up and aborts the line
                await connection.close(timeout=timeout_s)

    await _keep_following("LISTEN connection", listen, cache, retry_s=2)


async def watch_sqlite(database: str, on_change: Callable[[str], None], cache: StatusCache) -> None:
    """Relay to on_change every task that any connection or process (a separate sweeper, purge,
    an operator) changed, as triggers record it in task_changes (see TaskChange in app/db/tables.py),
    within FRESHNESS_POLL_S of its commit. The status cache is on only while this follows them."""

    async def follow_task_changes() -> None:
        # Not the engine's driver: this is cancelled at shutdown (see app/db/sqlite_thread.py).
        connection = SqliteThread(database, "sqlite-watch", lock_wait_s=0)
        try:
            version, seen = await connection.run(_start_position)
            cache.enable(True)  # empties it, and the first time turns it on: what came before went unheard
            while True:
                await asyncio.sleep(FRESHNESS_POLL_S)
                version, changes = await connection.run(functools.partial(_changes_since, version, seen))
                seen = _relay(changes, seen, on_change, cache)
        finally:
            connection.close_soon()

    await _keep_following("watching SQLite for changes", follow_task_changes, cache, retry_s=1)


def _start_position(connection: sqlite3.Connection) -> tuple[int, int]:
    """The data version, then the last seq ever given (its row may be pruned already): any commit
    after the first shows in the next poll."""
    version = connection.execute("PRAGMA data_version").fetchone()[0]
    return version, connection.execute(LAST_SEQ).fetchone()[0]


def _changes_since(version: int, seen: int, connection: sqlite3.Connection) -> tuple[int, list[tuple[int, str]]]:
    """The data version now, and the changes recorded after seq `seen` if another connection,
    in any process, committed since `version` (most polls cost only the PRAGMA)."""
    now = connection.execute("PRAGMA data_version").fetchone()[0]
    if now == version:
        return now, []
    return now, connection.execute(CHANGES_AFTER, (seen,)).fetchall()


def _relay(changes: list[tuple[int, str]], seen: int, on_change: Callable[[str], None], cache: StatusCache) -> int:
    """Pass each change on; returns the last seq seen. seq has no holes (one writer at a time, and a
    rolled-back insert takes its seq back), so one means rows were pruned before this saw them."""
    if changes and changes[0][0] != seen + 1:
        cache.clear()  # which tasks those rows named is lost: none counts as current
    for _seq, task_id in changes:
        on_change(task_id)
    return changes[-1][0] if changes else seen


async def _keep_following(what: str, follow: Callable[[], Awaitable[None]], cache: StatusCache, retry_s: float) -> None:
    """Run follow() forever, again after each end or failure. From then until follow() turns it
    back on, no cached status counts as current: changes made meanwhile went unheard. Waiters
    are covered by their re-check (RECHECK_S) all along."""
    while True:
        try:
            await follow()
        except Exception as exc:
            log.warning("%s failed (%s); retrying", what, type(exc).__name__)
        finally:
            cache.enable(False)
        await asyncio.sleep(retry_s)
