"""What settling a claimed batch costs: one transaction per row, as the lease runner used to, or one
for the whole batch, as it does now (app/outbox/runner.py Batch). A micro-benchmark in process,
on a fresh SQLite file or the PostgreSQL database named: `python -m bench.settle [DATABASE_URL]`.

Only the settle is timed: each row is a copied image (its StoredFile row and its task's
stored_images), the copier's own record_stored, with no download before it.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import delete

from app.db.migrate import upgrade
from app.db.tables import ApiKey, StoredFile, Task
from app.deps import Deps, open_deps, utc_now
from app.outbox import copies, runner
from app.outbox.storage import StoredObject, open_storage
from app.settings import Settings

BATCH = copies.BATCH_SIZE
ROUNDS = 30
LEASE = timedelta(minutes=1)
COPIED = copies.Copied(StoredObject(size=3, sha256="0" * 64), "image/png")


async def seed(deps: Deps, key_id: int, task_id: str) -> None:
    """A finished task of BATCH images, none copied yet."""
    now = utc_now()
    task = Task(id=task_id, api_key_id=key_id, provider="kie", model="nano-banana-pro", request={}, state="success")
    task.image_urls, task.stored_images, task.created_at, task.updated_at = ["http://x/"] * BATCH, [], now, now
    async with deps.write() as session:
        session.add(task)
        session.add_all(StoredFile(**row) for row in copies.copy_rows(task, now))


async def one_round(
    deps: Deps, key_id: int, task_id: str, groups: Callable[[int], list[list[int]]]
) -> tuple[float, float]:
    """Wall and CPU milliseconds to settle one claimed batch, its rows grouped by `groups`."""
    await seed(deps, key_id, task_id)
    async with deps.write() as session:
        rows = await copies.claim_copies(session, utc_now(), utc_now() + LEASE, BATCH)
    batch = runner.Batch(deps, copies.Copier(deps, open_storage(deps.settings)), rows)
    wall, cpu = time.perf_counter(), time.process_time()
    for group in groups(len(rows)):
        await batch.settle([(index, COPIED) for index in group])
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


async def measure(deps: Deps, key_id: int, name: str, groups: Callable[[int], list[list[int]]]) -> None:
    timings = [await one_round(deps, key_id, f"ih_{len(name)}_{n}", groups) for n in range(ROUNDS)]
    wall, cpu = (statistics.median(values) for values in zip(*timings, strict=True))
    print(f"| {name} | {BATCH} | {wall:.2f} | {cpu:.2f} |")


async def main(url: str) -> None:
    async with open_deps(Settings(database_url=url, secret="bench-" + "x" * 32)) as deps:
        await upgrade(deps.engine)
        async with deps.write() as session:
            for table in (StoredFile, Task, ApiKey):
                await session.execute(delete(table))
            key = ApiKey(name="bench", key_hash="x", prefix="x", webhook_secret="x", created_at=utc_now())
            session.add(key)
        print("| settle | rows | wall ms (median) | CPU ms (median) |\n|---|---|---|---|")
        await measure(deps, key.id, "one transaction per row", lambda n: [[i] for i in range(n)])
        await measure(deps, key.id, "one transaction per batch", lambda n: [list(range(n))])


def database_url(argv: list[str]) -> str:
    return argv[1] if len(argv) > 1 else f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/settle.db"


if __name__ == "__main__":
    asyncio.run(main(database_url(sys.argv)))
