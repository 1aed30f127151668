"""Everything a request or the sweeper needs, opened once and handed down: no globals."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db.engine import create_engine, create_sessions
from app.db.queries import AFTER_COMMIT, CHANGED_TASKS
from app.db.raw_writer import RawTransaction, RawWriter, open_raw_writer
from app.outbox.outbound import Outbound, Resolver, open_outbound, resolve
from app.providers.balance import CachedBalance
from app.providers.registry import Providers, build_providers
from app.reads.coalesced import Coalesced
from app.reads.key_cache import KeyCache
from app.reads.loader import TaskLoader, open_loader
from app.reads.status_cache import StatusCache
from app.reads.watch import TaskWatch
from app.settings import Settings
from app.tasks.group_commit import GroupCommit

# How old a line of queued tasks a status read may count a place in before the line is read again
# (app/tasks/status.py with_place).
QUEUE_LINE_S = 0.5


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deps:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[Any]
    http: httpx.AsyncClient  # to the providers
    outbound: Outbound  # to destinations others choose: webhooks, result copies
    providers: Providers
    loader: TaskLoader
    status_cache: StatusCache
    writer: RawWriter  # the callback path's own connection (app/db/raw_writer.py)
    keys: KeyCache = field(default_factory=KeyCache)
    watch: TaskWatch = field(default_factory=TaskWatch)
    balance: CachedBalance = field(default_factory=CachedBalance)
    # Each provider's line of tasks waiting for a create slot (app/tasks/throttle.py Line), read once for all readers.
    queue_lines: Coalesced[Any] = field(default_factory=lambda: Coalesced(QUEUE_LINE_S))
    clock: Callable[[], datetime] = utc_now
    # SIGTERM came: /readyz says so, for load balancers to stop sending, before the process stops accepting.
    draining: bool = False

    # SQLite has one writer at a time. Writers of this process take turns here instead of in
    # SQLite's busy handler, which sleeps for milliseconds at a time between tries.
    write_lock: asyncio.Lock | None = None
    _group_commits: dict[str, GroupCommit[Any, Any]] = field(default_factory=dict)

    def group_commit(self, kind: str, write_group: Callable[[RawTransaction, list[Any]], Any]) -> GroupCommit[Any, Any]:
        """The group commit of one kind of write (see app/tasks/group_commit.py), made on first use;
        its groups are written by the raw writer."""
        if kind not in self._group_commits:
            self._group_commits[kind] = GroupCommit(self.raw_write, write_group)
        return self._group_commits[kind]

    async def group_commits_idle(self, within_s: float) -> None:
        """Return once no group commit is busy, or after within_s at the latest: background work
        that shares their write lock waits here for a gap in a burst rather than stall it."""
        await asyncio.gather(*(group_commit.idle(within_s) for group_commit in self._group_commits.values()))

    @asynccontextmanager
    async def raw_write(self) -> AsyncIterator[RawTransaction]:
        """A write transaction on the raw writer's connection, announced as Deps.write() does."""
        async with self.writer.transaction() as tx:
            yield tx
        for task_id in tx.changed_ids:
            self.task_changed(task_id)
        for then in tx.committed:
            then()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction; once it commits, cached statuses of the tasks it changed are
        dropped and their waiters wake up. Never nest one in another: on SQLite that deadlocks."""
        async with self.write_lock or contextlib.nullcontext():
            async with self.sessions.begin() as session:
                yield session
        for task_id in session.info.pop(CHANGED_TASKS, ()):
            self.task_changed(task_id)
        for then in session.info.pop(AFTER_COMMIT, ()):
            then()

    def task_changed(self, task_id: str) -> None:
        """A committed change, here or on another replica: drop its cached status, wake its waiters."""
        self.status_cache.invalidate(task_id)
        self.watch.publish(task_id)


@asynccontextmanager
async def open_deps(
    settings: Settings, *, resolver: Resolver = resolve, clock: Callable[[], datetime] = utc_now
) -> AsyncIterator[Deps]:
    """Everything opened for settings; `resolver` answers the name lookups of outbound requests, and
    `clock` tells the time every deadline, lease and window is measured by (tests may step it)."""
    engine = create_engine(settings.database_url, settings.database_timeout_s)
    timeout = httpx.Timeout(settings.upstream_timeout_s, connect=min(10.0, settings.upstream_timeout_s))
    try:
        async with httpx.AsyncClient(timeout=timeout) as http, open_outbound(settings, resolver) as outbound:
            write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None
            deps = Deps(
                settings,
                engine,
                create_sessions(engine),
                http,
                outbound,
                build_providers(settings, http),
                open_loader(engine),
                StatusCache(settings.status_cache_size, clock=lambda: clock().timestamp()),
                open_raw_writer(settings.database_url, settings.database_timeout_s, write_lock),
                clock=clock,
                write_lock=write_lock,
            )
            try:
                yield deps
            finally:
                await deps.balance.close()
                await deps.loader.fetch.close()
                await deps.writer.close()
    finally:
        await engine.dispose()
