"""The status reader's own SQLite connection decodes rows as the ORM does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.db.tables import Task
from app.reads.loader import EngineFetch, SqliteFetch, open_loader


async def test_the_sqlite_reader_decodes_rows_as_the_orm_does(engine, sessions, make_client_key, on_postgres) -> None:
    if on_postgres:
        pytest.skip("SqliteFetch reads SQLite files; on PostgreSQL the engine itself is used")
    owner = (await make_client_key("reader")).id
    now = datetime.now(UTC).replace(microsecond=123456)
    common = {"api_key_id": owner, "provider": "kie", "model": "nano-banana-pro", "request": {"prompt": "x"}}
    times = {"created_at": now - timedelta(seconds=5), "updated_at": now}
    async with sessions.begin() as session:
        session.add_all(
            [
                Task(
                    id="done",
                    state="success",
                    image_urls=["https://x/a.png", "https://x/b.png"],
                    stored_images=[1],
                    completed_at=now,
                    **common,
                    **times,
                ),
                Task(id="waiting", state="processing", **common, **times),
                Task(
                    id="failed",
                    state="fail",
                    fail_msg="Content policy violation",
                    cost_time_ms=1500,
                    completed_at=now,
                    **common,
                    **times,
                ),
            ]
        )
    assert isinstance(open_loader(engine).fetch, SqliteFetch)
    direct, through_engine = SqliteFetch(engine.url.database), EngineFetch(engine)
    try:
        ids = ["done", "waiting", "failed", "absent"]
        assert sorted(await direct(ids)) == sorted(await through_engine(ids))
    finally:
        await direct.close()
        await through_engine.close()


TRICKY_TEXTS = [
    "",
    'a "quoted" \\ path',
    "\n\t\r\x01\x1f\x7f",
    "é 漢字 🎨",
    "\u2028\u2029",
    "ends with nul \x00 and on",
    "[1, 2]",
]


async def test_the_sqlite_reader_returns_any_text_exactly(engine, sessions, make_client_key, on_postgres) -> None:
    """It reads a batch back as one JSON row: no character of a column may come back changed."""
    if on_postgres:
        pytest.skip("SqliteFetch reads SQLite files; on PostgreSQL the engine itself is used")
    owner = (await make_client_key("reader")).id
    now = datetime.now(UTC)
    common = {"api_key_id": owner, "provider": "kie", "model": "nano-banana-pro", "request": {"prompt": "x"}}
    async with sessions.begin() as session:
        session.add_all(
            Task(id=f"t{n}", state="fail", fail_code=text[:20], fail_msg=text, created_at=now, updated_at=now, **common)
            for n, text in enumerate(TRICKY_TEXTS)
        )
    direct = SqliteFetch(engine.url.database)
    try:
        found = {row.id: row for row in await direct([f"t{n}" for n in range(len(TRICKY_TEXTS))])}
    finally:
        await direct.close()
    assert [found[f"t{n}"].fail_msg for n in range(len(TRICKY_TEXTS))] == TRICKY_TEXTS
    assert [found[f"t{n}"].fail_code for n in range(len(TRICKY_TEXTS))] == [text[:20] for text in TRICKY_TEXTS]
