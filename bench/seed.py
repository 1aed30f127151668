"""The bench database: created fresh, filled fast, dropped afterwards.

Tasks are written straight into the tables (SQLAlchemy Core executemany on SQLite, COPY on
PostgreSQL) rather than through the API: a million submissions would take hours and measure
the emulator, not the reads.
"""

from __future__ import annotations

import json
import random
import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import asyncpg_dsn, is_sqlite
from app.db.tables import ApiKey, StoredFile, Task
from app.keys import KEY_PREFIX, hash_key, new_webhook_secret

# Upstream ids of seeded in-flight tasks start with this, so the callback pool can be found and reset.
LIVE_PREFIX = "live_"
# Result URLs of seeded and bench-delivered results: a host outside FETCH_ALLOWED_HOSTS, so the
# copier gives each copy up at once instead of downloading (it still claims and records every one).
RESULT_HOST = "https://results.bench.invalid"
DEADLOCK = "40P01"  # PostgreSQL's deadlock_detected
RESET_ATTEMPTS = 5
# Far enough ahead that the gateway's sweeper never looks at a seeded in-flight task during a run.
NEXT_CHECK_AHEAD = timedelta(days=1)
CHUNK = 20_000
REQUEST_INPUT = {"aspect_ratio": "16:9", "resolution": "2K", "output_format": "png"}  # the gateway's defaults
TASK_COLUMNS = [column.name for column in Task.__table__.columns]


async def create_database(backend: str, workdir: Path, pg_url: str) -> str:
    """A fresh, empty database; its SQLAlchemy URL."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{workdir / f'bench-{uuid.uuid4().hex[:8]}.db'}"
    name = f"imagehook_bench_{uuid.uuid4().hex[:8]}"
    await _admin(pg_url, f'CREATE DATABASE "{name}"')
    return make_url(pg_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(url: str, pg_url: str) -> None:
    if is_sqlite(url):
        return  # the file goes with the bench's temporary directory
    await _admin(pg_url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


async def _admin(pg_url: str, sql: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def create_key(engine: AsyncEngine) -> tuple[str, int]:
    """A client API key, stored hashed as the gateway stores it; (key, id)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = {
        "name": "bench",
        "key_hash": hash_key(key),
        "prefix": key[:10],
        "webhook_secret": new_webhook_secret(),
        "created_at": datetime.now(UTC),
    }
    async with engine.begin() as conn:
        key_id = (await conn.execute(insert(ApiKey).values(row).returning(ApiKey.id))).scalar_one()
    return key, key_id


def task_rows(key_id: int, count: int, live_share: float, rng: random.Random) -> Iterator[dict[str, Any]]:
    """`count` tasks of one key: `live_share` of them in flight at the provider, the rest finished
    over the last 30 days (nine in ten successes), as a service that has run a while holds them."""
    now = datetime.now(UTC)
    for n in range(count):
        live = int((n + 1) * live_share) > int(n * live_share)  # exactly count * live_share, evenly spread
        created = now - timedelta(seconds=rng.uniform(0, 600) if live else rng.uniform(600, 30 * 86400))
        row = {
            "id": "ih_" + secrets.token_urlsafe(18),
            "api_key_id": key_id,
            "provider": "kie",
            "model": "nano-banana-pro",
            "request": {
                "model": "nano-banana-pro",
                "input": {
                    "prompt": f"bench task {n}",
                    "aspect_ratio": "16:9",
                    "resolution": "2K",
                    "output_format": "png",
                },
            },
            "state": "processing",
            "upstream_id": (LIVE_PREFIX if live else "done_") + secrets.token_hex(12),
            "image_urls": [],
            "stored_images": [],
            "fail_code": None,
            "fail_msg": None,
            "cost_time_ms": None,
            "credits": None,
            "credit_reserve": 20.0,
            "webhook_url": None,
            "submit_attempts": 1,
            "check_attempts": 0,
            "next_check_at": now + NEXT_CHECK_AHEAD,
            "created_at": created,
            "updated_at": created,
            "submitted_at": created,
            "completed_at": None,
            "cancel_at": None,
        }
        if not live:
            done = created + timedelta(seconds=rng.uniform(10, 90))
            row |= {"next_check_at": None, "updated_at": done, "completed_at": done, "credit_reserve": 0.0}
            if rng.random() < 0.9:
                url = f"{RESULT_HOST}/{row['upstream_id']}/0.png"
                row |= {"state": "success", "image_urls": [url], "cost_time_ms": 30_000, "credits": 18.0}
            else:
                row |= {"state": "fail", "fail_code": "500", "fail_msg": "Content policy violation", "credits": 0.0}
        yield row


def _chunks(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def add_tasks(engine: AsyncEngine, url: str, key_id: int, count: int, live_share: float, budget_s: float) -> int:
    """Insert up to `count` tasks, stopping early once `budget_s` has passed; how many were inserted."""
    started, inserted = time.monotonic(), 0
    rows = task_rows(key_id, count, live_share, random.Random())
    if is_sqlite(url):
        for chunk in _chunks(rows):
            # One transaction per chunk: SQLite commits are the expensive part, and the gateway
            # (running meanwhile) must get the write lock between chunks.
            async with engine.begin() as conn:
                await conn.execute(insert(Task), chunk)
            inserted += len(chunk)
            if time.monotonic() - started > budget_s:
                break
        return inserted
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for chunk in _chunks(rows):
            records = [tuple(_pg_value(row[name]) for name in TASK_COLUMNS) for row in chunk]
            await connection.copy_records_to_table("tasks", records=records, columns=TASK_COLUMNS)
            inserted += len(chunk)
            if time.monotonic() - started > budget_s:
                break
        # As autovacuum would soon after; done now so it cannot start in the middle of a measurement.
        await connection.execute("ANALYZE tasks")
    finally:
        await connection.close()
    return inserted


def _pg_value(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value  # JSON columns take text in COPY


async def count_unsent(engine: AsyncEngine) -> int:
    """Tasks not (yet) created upstream."""
    async with engine.connect() as conn:
        return (
            await conn.execute(select(func.count()).select_from(Task).where(Task.upstream_id.is_(None)))
        ).scalar_one()


async def count_tasks(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(Task))).scalar_one()


async def sample_ids(engine: AsyncEngine, n: int) -> list[str]:
    """n task ids drawn uniformly from the whole table."""
    async with engine.connect() as conn:
        return list((await conn.execute(select(Task.id).order_by(func.random()).limit(n))).scalars())


async def all_ids(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        ids = list((await conn.execute(select(Task.id))).scalars())
    random.shuffle(ids)
    return ids


async def live_pool(engine: AsyncEngine) -> list[tuple[str, str]]:
    """(task id, upstream id) of every seeded in-flight task."""
    async with engine.connect() as conn:
        stmt = select(Task.id, Task.upstream_id).where(Task.upstream_id.startswith(LIVE_PREFIX))
        return [(task_id, upstream_id) for task_id, upstream_id in await conn.execute(stmt)]


async def reset_live_pool(engine: AsyncEngine) -> None:
    """Put every seeded in-flight task back in flight, so each callback run finds fresh ones, and
    drop the copies the last run left queued, which would keep the copier busy in later runs.

    The gateway's copier may still be settling the last run's copies: on PostgreSQL these bulk
    statements can deadlock with it, and the one chosen to give way is simply run again."""
    for attempt in range(RESET_ATTEMPTS):
        try:
            return await _reset_live_pool(engine)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != DEADLOCK or attempt == RESET_ATTEMPTS - 1:
                raise


async def _reset_live_pool(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(Task)
            .where(Task.upstream_id.startswith(LIVE_PREFIX))
            .values(
                state="processing",
                image_urls=[],
                cost_time_ms=None,
                credits=None,
                completed_at=None,
                next_check_at=datetime.now(UTC) + NEXT_CHECK_AHEAD,
            )
        )
        await conn.execute(delete(StoredFile).where(StoredFile.source_url.startswith(RESULT_HOST)))


async def count_live_finished(engine: AsyncEngine) -> int:
    """How many seeded in-flight tasks are now terminal."""
    stmt = select(func.count()).where(Task.upstream_id.startswith(LIVE_PREFIX), Task.state.in_(["success", "fail"]))
    async with engine.connect() as conn:
        return (await conn.execute(stmt.select_from(Task))).scalar_one()


async def add_probe_tasks(engine: AsyncEngine, key_id: int, upstream_ids: list[str]) -> list[str]:
    """In-flight tasks whose upstream ids are real emulator jobs, for timing sweeper rounds."""
    rows = list(task_rows(key_id, len(upstream_ids), 1.0, random.Random()))
    for row, upstream_id in zip(rows, upstream_ids, strict=True):
        row["upstream_id"] = upstream_id
    async with engine.begin() as conn:
        await conn.execute(insert(Task), rows)
    return [row["id"] for row in rows]


async def schedule(engine: AsyncEngine, task_ids: list[str], at: datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(Task).where(Task.id.in_(task_ids)).values(next_check_at=at))
