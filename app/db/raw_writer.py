"""The callback path's writer: a raw driver connection of its own, no ORM, no pool.

Callbacks are the one write that arrives in bursts of thousands, and most of what a group of
them cost through the ORM was SQLAlchemy and its driver adapters, not the database. Here a
group's transaction is a few prepared statements on one connection that only this writer uses:
on SQLite a plain sqlite3 connection on a thread of its own (one thread hop to lock the tasks,
one to write and commit); on PostgreSQL one asyncpg connection (no pool checkout, no ping).

On SQLite a hop costs by statement steps, not by rows' SQL: the sqlite3 module lets go of the GIL
around every step, and the writer's thread must then take it back from the busy event loop. So a
group's rows go in as one multi-row statement per table, not one step per row, and its tasks are
read back as one JSON row (`rows_by_id`; gateway CPU per callback under a burst: 0.33 ms before, 0.30 after).

It runs exactly the writes `apply_updates` decides (app/tasks/updates.py), as `TaskWriter`,
and stores values as SQLAlchemy's column types would: JSON as text, and on SQLite datetimes
in SQLAlchemy's own text form, so the ORM reads back what it would have written itself.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
from sqlalchemy import JSON, DateTime
from sqlalchemy.engine import make_url

from app.db.engine import SQLITE_PRAGMAS, UNBOUNDED_SQLITE_LOCK_WAIT_S, asyncpg_bounds, asyncpg_dsn, is_sqlite
from app.db.outage import Breaker, is_outage
from app.db.sqlite_thread import SqliteThread, placeholders, rows_by_id
from app.db.tables import Base
from app.db.task_writer import HEAD_COLUMNS, TaskHead, group_by_columns
from app.errors import DatabaseUnavailable
from app.tasks.domain import TERMINAL

APPLICATION_NAME = "imagehook-callbacks"
# SQLite's bound on one statement's parameters by default since 3.32 (UPDATE … FROM, used here, is 3.33).
SQLITE_MAX_VARIABLES = 32766


class RawWriter(Protocol):
    def transaction(self) -> contextlib.AbstractAsyncContextManager[RawTransaction]:
        """A write transaction, committed when the block ends (rolled back if it raises); an
        outage comes out as DatabaseUnavailable. Who commits announces `changed_ids` (Deps.raw_write)."""
        ...

    async def close(self) -> None: ...


class RawTransaction(abc.ABC):
    """A TaskWriter made of one driver's `execute` (many rows) and `fetch`: the SQL is shared."""

    # By column type, what the driver is given for a value (not None) of such a column.
    type_encoders: dict[type, Callable[[Any], Any]] = {JSON: json.dumps}

    def __init__(self) -> None:
        self.changed_ids: list[str] = []
        self.committed: list[Callable[[], None]] = []  # called by who commits (Deps.raw_write)

    def moment(self, value: Any) -> datetime:
        """A timestamp column's value as the driver returns it, as an aware datetime."""
        return value

    @abc.abstractmethod
    def placeholder(self, n: int) -> str:
        """The marker of the n-th parameter, from 1."""

    @abc.abstractmethod
    async def head_rows(self, task_ids: Sequence[str]) -> list[tuple[Any, ...]]:
        """HEAD_COLUMNS of the tasks (given in id order) as the driver returns them, locked."""

    @abc.abstractmethod
    async def execute(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """One statement, once per row."""

    @abc.abstractmethod
    async def update_rows(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        """Set `columns` on the row each of `rows` (id, *values) names."""

    @abc.abstractmethod
    async def insert_rows(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None: ...

    def encoded(self, table: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """The rows' values of `columns`, in order, as SQLAlchemy's column types would store them."""
        encoders = column_encoders(type(self), table, tuple(columns))
        if not encoders:
            return [tuple(row[name] for name in columns) for row in rows]
        encoded = []
        for row in rows:
            values = [row[name] for name in columns]
            for at, encode in encoders:
                if values[at] is not None:
                    values[at] = encode(values[at])
            encoded.append(tuple(values))
        return encoded

    async def lock_heads(self, task_ids: Sequence[str]) -> dict[str, TaskHead]:
        if not task_ids:
            return {}
        rows = await self.head_rows(sorted(task_ids))
        heads = [
            TaskHead(*row[:4], json.loads(row[4]) if row[4] else [], *row[5:7], self.moment(row[7]), *row[8:])
            for row in rows
        ]
        return {head.id: head for head in heads}

    async def update_tasks(self, writes: Sequence[dict[str, Any]]) -> None:
        for same_columns in group_by_columns(writes):
            columns = [name for name in same_columns[0] if name != "id"]
            await self.update_rows("tasks", columns, self.encoded("tasks", ["id", *columns], same_columns))

    async def insert(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        defaults = column_defaults(table)
        rows = [defaults | row for row in rows]
        columns = list(rows[0])
        await self.insert_rows(table, columns, self.encoded(table, columns, rows))

    async def reschedule(self, task_ids: Sequence[str], next_check_at: datetime) -> None:
        if not task_ids:
            return
        terminal = ", ".join(f"'{state.value}'" for state in sorted(TERMINAL))
        marker = self.placeholder
        sql = f"UPDATE tasks SET next_check_at = {marker(1)} WHERE id = {marker(2)} AND state NOT IN ({terminal})"
        rows = [{"next_check_at": next_check_at, "id": task_id} for task_id in task_ids]
        await self.execute(sql, self.encoded("tasks", ["next_check_at", "id"], rows))

    def changed(self, task_ids: Sequence[str]) -> None:
        self.changed_ids.extend(task_ids)

    def after_commit(self, then: Callable[[], None]) -> None:
        self.committed.append(then)


@functools.cache
def column_encoders(
    kind: type[RawTransaction], table: str, columns: tuple[str, ...]
) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    """(position, encoder) of each of `columns` whose type `kind` encodes (by the type or its base)."""
    types = Base.metadata.tables[table].c
    found = []
    for at, name in enumerate(columns):
        column_type = types[name].type
        column_type = getattr(column_type, "impl", column_type)  # a TypeDecorator: the type it stores as
        encoder = next(
            (kind.type_encoders[base] for base in type(column_type).__mro__ if base in kind.type_encoders), None
        )
        if encoder is not None:
            found.append((at, encoder))
    return tuple(found)


@functools.cache
def column_defaults(table: str) -> dict[str, Any]:
    """The table's Python-side column defaults (app/db/tables.py), which the ORM would have filled in."""
    columns = Base.metadata.tables[table].c
    defaults = {column.name: column.default for column in columns if column.default is not None}
    return {name: default.arg(None) if default.is_callable else default.arg for name, default in defaults.items()}


def open_raw_writer(url: str, timeout_s: float | None, write_lock: asyncio.Lock | None) -> RawWriter:
    """timeout_s bounds each wait on the database, as the engine's does (None: unbounded)."""
    if is_sqlite(url):
        assert write_lock is not None
        lock_wait_s = timeout_s or UNBOUNDED_SQLITE_LOCK_WAIT_S
        return SqliteWriter(make_url(url).database or "", lock_wait_s, write_lock)
    return PostgresWriter(asyncpg_dsn(url), timeout_s or None)


def sqlite_datetime(value: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME text, `%Y-%m-%d %H:%M:%S.%f` of the value's own fields
    (any offset left off, as SQLAlchemy leaves it); isoformat makes it in half strftime's time."""
    return value.isoformat(" ", "microseconds")[:26]


class SqliteTransaction(RawTransaction):
    """Writes wait in `pending` and go with the next thread hop: the lock's, or the commit's."""

    type_encoders = RawTransaction.type_encoders | {DateTime: sqlite_datetime}

    def __init__(self, connection: SqliteThread) -> None:
        super().__init__()
        self.connection, self.begun = connection, False
        self.pending: list[tuple[str, list[tuple[Any, ...]]]] = []

    def placeholder(self, n: int) -> str:
        return "?"

    def moment(self, value: Any) -> datetime:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    async def head_rows(self, task_ids: Sequence[str]) -> list[tuple[Any, ...]]:
        found = await self.connection.run(lambda db: rows_by_id(self._flush(db), "tasks", HEAD_COLUMNS, task_ids))
        return [tuple(row) for row in found]

    async def execute(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.pending.append((sql, rows))

    async def update_rows(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        sets = ", ".join(f"{name} = v.column{n}" for n, name in enumerate(columns, 2))
        for chunk in chunked(rows, len(columns) + 1):
            values = ", ".join([f"({placeholders(len(columns) + 1)})"] * len(chunk))
            sql = f"UPDATE {table} SET {sets} FROM (VALUES {values}) AS v WHERE {table}.id = v.column1"
            self.pending.append((sql, [flattened(chunk)]))

    async def insert_rows(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        for chunk in chunked(rows, len(columns)):
            values = ", ".join([f"({placeholders(len(columns))})"] * len(chunk))
            self.pending.append((f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}", [flattened(chunk)]))

    async def commit(self) -> None:
        await self.connection.run(lambda db: self._flush(db).execute("COMMIT"))

    def _flush(self, db: sqlite3.Connection) -> sqlite3.Connection:
        if not self.begun:
            db.execute("BEGIN IMMEDIATE")  # the write lock now, not at the first write
            self.begun = True
        pending, self.pending = self.pending, []
        for sql, rows in pending:
            db.executemany(sql, rows)
        return db


def chunked(rows: list[tuple[Any, ...]], width: int) -> list[list[tuple[Any, ...]]]:
    """The rows in runs small enough for one statement's parameters."""
    size = max(1, SQLITE_MAX_VARIABLES // width)
    return [rows[at : at + size] for at in range(0, len(rows), size)]


def flattened(rows: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(value for row in rows for value in row)


class SqliteWriter:
    def __init__(self, path: str, lock_wait_s: float, write_lock: asyncio.Lock) -> None:
        self.connection = SqliteThread(
            path, "callback-writes", lock_wait_s=lock_wait_s, read_only=False, pragmas=SQLITE_PRAGMAS
        )
        self.write_lock = write_lock

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[RawTransaction]:
        # This process's writers take turns on the lock Deps.write() takes too.
        async with self.write_lock:
            tx = SqliteTransaction(self.connection)
            try:
                yield tx
                await tx.commit()
            except BaseException as exc:
                if tx.begun:  # queued behind whatever the thread is still doing, even if cancelled
                    self.connection.run_soon(_rollback)
                if isinstance(exc, Exception) and is_outage(exc):
                    raise DatabaseUnavailable() from exc
                raise

    async def close(self) -> None:
        await self.connection.close()


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


class PostgresTransaction(RawTransaction):
    """asyncpg pipelines a statement's rows, so one statement per row costs no extra round trips."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        super().__init__()
        self.connection = connection

    def placeholder(self, n: int) -> str:
        return f"${n}"

    async def head_rows(self, task_ids: Sequence[str]) -> list[tuple[Any, ...]]:
        sql = f"SELECT {', '.join(HEAD_COLUMNS)} FROM tasks WHERE id = ANY($1::varchar[]) ORDER BY id FOR UPDATE"
        return [tuple(row) for row in await self.connection.fetch(sql, list(task_ids))]

    async def execute(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self.connection.executemany(sql, rows)

    async def update_rows(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        sets = ", ".join(f"{name} = ${n}" for n, name in enumerate(columns, 2))
        await self.execute(f"UPDATE {table} SET {sets} WHERE id = $1", rows)

    async def insert_rows(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        markers = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        await self.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({markers})", rows)


class PostgresWriter:
    """One connection, one transaction at a time; after an outage, refused at once for a moment
    (the engine's Breaker), then reconnected by the next group."""

    def __init__(self, dsn: str, timeout_s: float | None) -> None:
        self.dsn, self.timeout_s = dsn, timeout_s
        self.breaker = Breaker()
        self._connection: asyncpg.Connection | None = None
        self._turn = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[RawTransaction]:
        async with self._turn:
            with self.breaker.attempt():
                connection = await self._connected()
                tx = PostgresTransaction(connection)
                try:
                    async with connection.transaction():
                        yield tx
                except Exception as exc:
                    if is_outage(exc) or connection.is_closed():
                        self._drop()  # cut off: "connection is closed" is an outage too
                        raise DatabaseUnavailable() from exc
                    raise
                except BaseException:
                    self._drop()  # cancelled midway: its state is unknown
                    raise

    async def _connected(self) -> asyncpg.Connection:
        """The connection, made afresh if there is none or the server closed it since."""
        if self._connection is not None and not self._connection.is_closed():
            return self._connection
        self._drop()
        settings = {"application_name": APPLICATION_NAME, "idle_in_transaction_session_timeout": "60000"}
        self._connection = await asyncpg.connect(self.dsn, server_settings=settings, **asyncpg_bounds(self.timeout_s))
        return self._connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
