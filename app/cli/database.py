"""The database as commands use it: opened with everything else, and refused in one line when unusable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import create_engine
from app.db.migrate import current_revision, upgrade
from app.deps import Deps, open_deps
from app.errors import DatabaseUnavailable
from app.settings import Settings

T = TypeVar("T")


class NoSchema(Exception):
    """The database has never been migrated: no command but `imagehook migrate` can use it."""

    def __init__(self) -> None:
        super().__init__("the database has no schema yet: run `imagehook migrate` first")


def unreachable(exc: DatabaseUnavailable) -> str:
    """What the database's driver said, in one line: the bottom of the exception chain."""
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"database unreachable: {type(cause).__name__}: {first_line}" if cause is not exc else "database unreachable"


async def require_schema(engine: AsyncEngine) -> None:
    """NoSchema for a database never migrated; DatabaseUnavailable if it does not answer."""
    if await current_revision(engine) is None:
        raise NoSchema


@asynccontextmanager
async def open_checked_deps(settings: Settings) -> AsyncIterator[Deps]:
    """open_deps, once the database has answered and has a schema."""
    async with open_deps(settings) as deps:
        await require_schema(deps.engine)
        yield deps


def run_with_deps(work: Callable[[Deps], Awaitable[T]]) -> T:
    async def run() -> T:
        async with open_checked_deps(Settings.from_environ()) as deps:
            return await work(deps)

    return asyncio.run(run())


async def migrate(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
