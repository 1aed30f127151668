"""Everything a request or the sweeper needs, opened once and handed down: no globals."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.db.engine import create_engine, create_sessions
from app.providers import Provider, build_providers
from app.settings import Settings


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deps:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[Any]
    http: httpx.AsyncClient
    providers: dict[str, Provider]
    clock: Callable[[], datetime] = utc_now


@asynccontextmanager
async def open_deps(settings: Settings) -> AsyncIterator[Deps]:
    engine = create_engine(settings.database_url)
    timeout = httpx.Timeout(settings.upstream_timeout_s, connect=min(10.0, settings.upstream_timeout_s))
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            yield Deps(settings, engine, create_sessions(engine), http, build_providers(settings, http))
    finally:
        await engine.dispose()
