"""One plain sqlite3 connection, used only from a thread of its own.

For the few hot or long-lived SQLite reads that skip the engine: a query is one thread round
trip (aiosqlite makes about five), and cancelling a caller midway leaves nothing waiting (an
aiosqlite call cancelled midway can leave its connection waiting forever on the next one).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class SqliteThread:
    def __init__(self, path: str, name: str, *, lock_wait_s: float, read_only: bool = True) -> None:
        self.path, self.lock_wait_s, self.read_only = path, lock_wait_s, read_only
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._connection: sqlite3.Connection | None = None

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """work(connection), on the connection's thread; connects first if need be."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, work)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            self._connection = sqlite3.connect(self.path, timeout=self.lock_wait_s)
            if self.read_only:
                self._connection.execute("PRAGMA query_only = ON")
        return work(self._connection)

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
