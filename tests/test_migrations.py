"""The schema comes only from migrations: one head, matching the models, reversible."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from app.db.migrate import alembic_config, current_revision, downgrade, head_revision, upgrade
from app.db.models import Base


def test_migrations_have_a_single_head(database_url: str) -> None:
    assert len(ScriptDirectory.from_config(alembic_config(database_url)).get_heads()) == 1


async def test_models_and_migrations_agree(engine) -> None:
    def diff(connection):
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    assert await current_revision(engine) == head_revision(str(engine.url))


async def test_downgrade_to_base_and_back(engine) -> None:
    await downgrade(engine, "base")
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert tables <= {"alembic_version"}
    await upgrade(engine)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert tables >= set(Base.metadata.tables)
