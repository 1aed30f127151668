"""Run and inspect Alembic migrations, sharing an async connection (no loop tricks)."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

# migrations/ of the source tree, installed with the package under this name (see pyproject.toml).
MIGRATIONS_PACKAGE = "app._migrations"


def alembic_config(url: str) -> Config:
    """The migrations shipped with the package, for url; alembic.ini serves only the `alembic` tool."""
    cfg = Config()
    cfg.set_main_option("script_location", str(files(MIGRATIONS_PACKAGE)))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    await _run(engine, command.upgrade, revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    await _run(engine, command.downgrade, revision)


async def _run(engine: AsyncEngine, alembic_command: Callable[[Config, str], None], revision: str) -> None:
    """Run an Alembic command on one of the engine's connections (env.py picks it up)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))

    def run(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        alembic_command(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
