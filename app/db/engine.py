"""Engine and session factory for SQLite (one process) or PostgreSQL (many replicas).

With a timeout, every wait on the database is bounded by it, and running into a bound, like
any other outage, raises DatabaseUnavailable (see app/db/outage.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from app.db.outage import GuardedPool, raise_outages_as_unavailable

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # NORMAL is durable across application crashes in WAL mode; only an OS crash
    # can lose the last commits, which the sweeper then reconciles with the providers.
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
# How long a SQLite writer waits for another's lock when nothing bounds it (migrations, tools).
UNBOUNDED_SQLITE_LOCK_WAIT_S = 30.0


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, timeout_s: float | None = None) -> AsyncEngine:
    """timeout_s bounds connecting, each statement, and waiting for a pooled connection; None
    (or 0) leaves them unbounded, as migrations need: an index build may take minutes."""
    timeout_s = timeout_s or None
    pool_bounds: dict[str, Any] = {"pool_timeout": timeout_s} if timeout_s else {}
    if is_sqlite(url):
        engine = _sqlite_engine(url, timeout_s, pool_bounds)
    else:
        engine = _postgres_engine(url, timeout_s, pool_bounds)
    raise_outages_as_unavailable(engine)
    return engine


def asyncpg_dsn(url: str) -> str:
    """The DSN asyncpg.connect() takes for a postgresql+asyncpg:// URL, for the few raw connections."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def asyncpg_bounds(timeout_s: float | None) -> dict[str, float]:
    """asyncpg.connect() arguments: how long connecting may take, and then each statement."""
    return {"timeout": timeout_s, "command_timeout": timeout_s} if timeout_s else {}


def _abandoned_transactions_end(timeout_s: float | None) -> dict[str, Any]:
    """No transaction of imagehook's waits between statements (none spans an upstream call), so one
    idle for a minute was abandoned: by a replica cut off from the database mid-transaction, whose
    server side would otherwise hold its row locks until TCP gives up, which can take hours."""
    return {"server_settings": {"idle_in_transaction_session_timeout": "60000"}} if timeout_s else {}


def _postgres_engine(url: str, timeout_s: float | None, pool_bounds: dict[str, Any]) -> AsyncEngine:
    return create_async_engine(
        url,
        poolclass=GuardedPool,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        connect_args=asyncpg_bounds(timeout_s) | _abandoned_transactions_end(timeout_s),
        **pool_bounds,
    )


def _sqlite_engine(url: str, timeout_s: float | None, pool_bounds: dict[str, Any]) -> AsyncEngine:
    _ensure_sqlite_dir(url)
    # A writer waits this long for another process's lock, then gives up (readers never wait:
    # WAL). Writers of this process take turns before they get here (Deps.write).
    lock_wait_s = timeout_s or UNBOUNDED_SQLITE_LOCK_WAIT_S
    engine = create_async_engine(url, connect_args={"timeout": lock_wait_s}, **pool_bounds)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def create_sessions(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def _ensure_sqlite_dir(url: str) -> None:
    from pathlib import Path

    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
