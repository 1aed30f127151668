"""Telling a database outage from a failed statement, and failing fast while one lasts.

An outage is the database not being reachable or not answering in time: a refused, reset or
timed-out connection, a server shutting down, no free pooled connection within the bound,
SQLite's write lock held by someone else past the bound. Nothing was decided, so whoever
asked may simply retry: the engine raises DatabaseUnavailable (a 503) for all of them. A
statement the database refused (a constraint, bad data) is no outage and keeps its own error.

On PostgreSQL the pool sits behind a Breaker: after an outage, checkouts fail at once for
BREAKER_OPEN_S instead of each waiting out the timeout; then one checkout tries again, and
its success closes the breaker.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolProxiedConnection

from app.errors import DatabaseUnavailable

BREAKER_OPEN_S = 1.0
# SQLSTATEs of a server that cannot serve: class 08 (connection exception), no connection slot
# left (53300), and shutting down, crashed or starting up (57P01-57P03).
UNAVAILABLE_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03")
SQLITE_BUSY = "database is locked"

T = TypeVar("T")


def is_outage(exc: BaseException) -> bool:
    """Whether exc, raised on the way to or from the database, says it was unreachable or too slow."""
    if isinstance(exc, DatabaseUnavailable | sa_exc.TimeoutError):  # TimeoutError: no free pooled connection
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or is_outage(exc.orig)
    if isinstance(exc, sqlite3.OperationalError):
        return SQLITE_BUSY in str(exc)
    # OSError: refused, reset, unknown host, and (TimeoutError) no answer in time.
    return isinstance(exc, OSError) or (getattr(exc, "sqlstate", None) or "").startswith(UNAVAILABLE_SQLSTATES)


async def stale_if_error(read: Awaitable[T], last_known: Callable[[], T | None]) -> T:
    """What read finds; if the database is out, what last_known() gives instead, if anything."""
    try:
        return await read
    except Exception as exc:
        known = last_known() if is_outage(exc) else None
        if known is None:
            raise
        return known


class Breaker:
    """After an outage, callers are refused at once for open_s; then one caller at a time tries,
    and the first that gets through closes the breaker."""

    def __init__(self, open_s: float = BREAKER_OPEN_S) -> None:
        self.open_s = open_s
        self._open_until: float | None = None  # None: closed
        self._trying = False

    def trip(self) -> None:
        self._open_until = time.monotonic() + self.open_s

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        """Run the block unless the breaker refuses it; an outage in it trips the breaker and
        comes out as DatabaseUnavailable, a success closes it."""
        trying = self._admit()
        try:
            yield
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.trip()
            raise DatabaseUnavailable() from exc
        else:
            self._open_until = None
        finally:
            if trying:
                self._trying = False

    def _admit(self) -> bool:
        """Raise DatabaseUnavailable if refused; True if this caller is the one trying again."""
        if self._open_until is None:
            return False
        if self._trying or time.monotonic() < self._open_until:
            raise DatabaseUnavailable()
        self._trying = True
        return True


class GuardedPool(AsyncAdaptedQueuePool):
    """The engine's pool behind a Breaker. Every way to the database (sessions, the status
    loader, readiness) checks a connection out here, so one gate covers them all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.breaker = Breaker()

    def connect(self) -> PoolProxiedConnection:
        with self.breaker.attempt():
            return super().connect()

    def recreate(self) -> GuardedPool:
        pool = super().recreate()  # engine.dispose() swaps in a new pool: it keeps the breaker
        assert isinstance(pool, GuardedPool)
        pool.breaker = self.breaker
        return pool


def raise_outages_as_unavailable(engine: AsyncEngine) -> None:
    """Statements that fail for an outage raise DatabaseUnavailable (and trip the pool's breaker)."""
    event.listen(engine.sync_engine, "handle_error", _on_error)


def _on_error(context: ExceptionContext) -> BaseException | None:
    # A failed pre-ping is the pool's to handle: it reconnects, and the checkout's outcome counts.
    if context.is_pre_ping or not (context.is_disconnect or is_outage(context.original_exception)):
        return None
    pool = context.engine.pool if context.engine is not None else None
    if isinstance(pool, GuardedPool):
        pool.breaker.trip()
    return DatabaseUnavailable()
