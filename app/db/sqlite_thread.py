"""One plain sqlite3 connection, used only from a thread of its own.

For the few hot or long-lived SQLite statements that skip the engine (status reads, the change
watcher, the callback writer): a query is one thread round trip (aiosqlite makes about five),
and cancelling a caller midway leaves nothing waiting (an aiosqlite call cancelled midway can
leave its connection waiting forever on the next one). The connection is in autocommit mode:
a writer says BEGIN and COMMIT itself.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def placeholders(count: int) -> str:
    return ", ".join("?" * count)


def rows_by_id(db: sqlite3.Connection, table: str, columns: Sequence[str], ids: Sequence[str]) -> list[list[Any]]:
    """`columns` of the rows whose id is one of `ids`, read as one JSON row however many they are: the
    sqlite3 module lets go of the GIL around every step of a query (one per row it returns), and on a
    thread of its own taking it back from the busy event loop is most of what a step costs. JSON
    keeps text, integers and NULL exactly: read no REAL column this way."""
    aggregate = f"json_group_array(json_array({', '.join(columns)}))"
    (found,) = db.execute(f"SELECT {aggregate} FROM {table} WHERE id IN ({placeholders(len(ids))})", ids).fetchone()
    return json.loads(found)


class SqliteThread:
    def __init__(
        self, path: str, name: str, *, lock_wait_s: float, read_only: bool = True, pragmas: Sequence[str] = ()
    ) -> None:
        self.path, self.lock_wait_s = path, lock_wait_s
        self.pragmas = ("PRAGMA query_only = ON", *pragmas) if read_only else tuple(pragmas)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._connection: sqlite3.Connection | None = None

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """work(connection), on the connection's thread; connects first if need be."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, work)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            self._connection = sqlite3.connect(self.path, timeout=self.lock_wait_s, isolation_level=None)
            for pragma in self.pragmas:
                self._connection.execute(pragma)
        return work(self._connection)

    def run_soon(self, work: Callable[[sqlite3.Connection], object]) -> None:
        """work(connection) once the work queued before it is done, waiting for nothing (safe while cancelled)."""
        self._thread.submit(self._run, work)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._disconnect)
        self._thread.shutdown()

    def close_soon(self) -> None:
        """Close once any work still running is done, waiting for nothing (safe while cancelled)."""
        self._thread.submit(self._disconnect)
        self._thread.shutdown(wait=False)

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
