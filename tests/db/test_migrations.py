"""The schema comes only from migrations: one head, matching the models, reversible."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from app.db.migrate import alembic_config, current_revision, downgrade, head_revision, upgrade
from app.db.tables import Base


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


async def test_upgrade_keeps_existing_keys_and_events(engine) -> None:
    """Rows written under the first schema survive: keys get a webhook secret, events an owner."""
    await downgrade(engine, "8a419cd2cba3")
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO api_keys (name, key_hash, prefix, created_at) VALUES ('old', 'h', 'ih_', :t)"),
                {"t": datetime.now(UTC)},
            )
            key_id = (await conn.execute(text("SELECT id FROM api_keys"))).scalar_one()
            await conn.execute(
                text(
                    "INSERT INTO tasks (id, api_key_id, provider, model, request, state, image_urls, submit_attempts,"
                    " check_attempts, created_at, updated_at) VALUES ('ih_old', :k, 'kie', 'nano-banana-pro', '{}',"
                    " 'success', '[]', 1, 0, :t, :t)"
                ),
                {"k": key_id, "t": datetime.now(UTC)},
            )
            await conn.execute(
                text(
                    "INSERT INTO task_events (task_id, at, source, to_state, outcome, detail)"
                    " VALUES ('ih_old', :t, 'submit', 'pending', 'created', '{}')"
                ),
                {"t": datetime.now(UTC)},
            )
    finally:
        await upgrade(engine)
    async with engine.connect() as conn:
        secret = (await conn.execute(text("SELECT webhook_secret FROM api_keys"))).scalar_one()
        owner = (await conn.execute(text("SELECT api_key_id FROM task_events"))).scalar_one()
    assert secret.startswith("whsec_") and owner == key_id
