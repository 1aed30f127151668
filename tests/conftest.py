"""What every tier shares: the database of the run, made only when a test asks for it (SQLite file, or
PostgreSQL when IMAGEHOOK_TEST_DATABASE_URL names one), migrated once. The unit and emulator tiers never
ask, so they touch no database. And an S3-protocol server, started only for the tests that ask for a
bucket (tests/support/s3.py)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.db.engine import create_engine, is_sqlite
from app.db.migrate import upgrade
from tests.support.browser import browser
from tests.support.s3 import bucket, s3_server

__all__ = ["browser", "bucket", "s3_server"]  # fixtures, found by pytest through this module


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = os.environ.get("IMAGEHOOK_TEST_DATABASE_URL")
    if not base:
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'imagehook.db'}"
        return
    # A fresh database per run, so runs never see each other's rows.
    url = make_url(base)
    name = f"imagehook_test_{uuid.uuid4().hex[:8]}"
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    asyncio.run(_admin(admin_dsn, f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(admin_dsn, f'DROP DATABASE "{name}" WITH (FORCE)'))


async def _admin(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def on_postgres(database_url: str) -> bool:
    return not is_sqlite(database_url)


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)
