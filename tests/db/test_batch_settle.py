"""Claimed batches of the lease runner (app/outbox/runner.py) on the run's real database: a batch is
settled in one transaction and logged in one line, and a settle the database never took leaves
every row to be claimed again once its lease has run out."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update

from app.db.outage import is_outage
from app.db.tables import StoredFile, Task, WebhookAttempt, WebhookDelivery
from app.deps import Deps, open_deps
from app.errors import GiveUp, RetryLater
from app.outbox import copies, deliveries, runner, webhooks
from app.outbox.storage import StoredObject, open_storage
from tests.support.clock import SteppedClock
from tests.support.database import count_rows, load_task
from tests.support.gateways import gateway_settings

N = 6
LEASE = timedelta(seconds=60)


@contextlib.asynccontextmanager
async def replica(database_url: str, clock: SteppedClock) -> AsyncIterator[Deps]:
    async with open_deps(gateway_settings(database_url, "http://127.0.0.1:9"), clock=clock) as deps:
        yield deps


@contextlib.contextmanager
def commits(deps: Deps) -> Iterator[list[object]]:
    """Every commit on deps' engine, as it happens."""
    seen: list[object] = []
    listener = seen.append
    event.listen(deps.engine.sync_engine, "commit", listener)
    try:
        yield seen
    finally:
        event.remove(deps.engine.sync_engine, "commit", listener)


@dataclass
class Cut:
    """The database out of reach, from the moment `on` is set: every statement fails as a reset connection."""

    on: bool = False

    def __call__(self, *args: Any) -> None:
        if self.on:
            raise ConnectionResetError("cut off from the database")


async def a_task(sessions: Any, key_id: int, urls: list[str], webhook_url: str | None = None) -> Task:
    now = datetime.now(UTC)
    task = Task(id="ih_batch", api_key_id=key_id, provider="kie", model="nano-banana-pro", request={}, state="success")
    task.image_urls, task.stored_images, task.created_at, task.updated_at = urls, [], now, now
    task.webhook_url = webhook_url
    async with sessions.begin() as session:
        session.add(task)
    return task


@dataclass(frozen=True)
class Downloaded(copies.Copier):
    """A copier whose every download has already succeeded: no network, only the settle is real."""

    async def work(self, row: StoredFile) -> copies.Copied:
        return copies.Copied(StoredObject(size=3, sha256="0" * 64), "image/png")


@dataclass(frozen=True)
class Answered(deliveries.Sender):
    """A sender whose receiver answers each delivery with the next of `statuses` (cycling),
    without a network; it notes what it sent, and may cut the database off once it has."""

    statuses: tuple[int, ...] = (200,)
    sent: list[int] = field(default_factory=list)
    cut: Cut = field(default_factory=Cut)
    cut_after_sending: bool = False

    async def work(self, due: deliveries.Due) -> deliveries.Attempted:
        status = self.statuses[len(self.sent) % len(self.statuses)]
        self.sent.append(due.delivery.id)
        self.cut.on = self.cut_after_sending
        failure = None if status == 200 else RetryLater(f"HTTP {status}")
        return deliveries.Attempted({"type": "task.succeeded"}, deliveries.Result(status, "ok", failure), 3)


@dataclass(frozen=True)
class Refused(copies.Copier):
    """A copier whose every download is refused for good; one copy, "stored_meanwhile", was stored by
    another copier (whose lease had run out) while this one worked."""

    async def work(self, row: StoredFile) -> copies.Copied:
        if row.n == 0:
            async with self.deps.write() as session:
                await session.execute(update(StoredFile).where(StoredFile.id == row.id).values(state="stored"))
        raise GiveUp("not an image: the bytes are not PNG, JPEG, WebP or GIF")


@contextlib.contextmanager
def statements(deps: Deps) -> Iterator[list[str]]:
    """Every statement sent on deps' engine (an executemany counts once), as it happens."""
    seen: list[str] = []

    def listener(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.split()[0].upper())

    event.listen(deps.engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(deps.engine.sync_engine, "before_cursor_execute", listener)


async def add_deliveries(sessions: Any, task: Task) -> None:
    now = datetime.now(UTC)
    async with sessions.begin() as session:
        session.add_all(WebhookDelivery(**webhooks.delivery_row(task, now, 3600.0)) for _ in range(N))


async def all_deliveries(sessions: Any) -> list[WebhookDelivery]:
    async with sessions() as session:
        return list((await session.execute(select(WebhookDelivery).order_by(WebhookDelivery.id))).scalars())


async def a_task_with_copies(sessions: Any, key_id: int) -> Task:
    """A finished task of N images, none of them copied yet."""
    task = await a_task(sessions, key_id, [f"http://127.0.0.1:9/{n}.png" for n in range(N)])
    async with sessions.begin() as session:
        session.add_all(StoredFile(**row) for row in copies.copy_rows(task, datetime.now(UTC)))
    return task


async def test_a_batch_of_copies_is_settled_in_one_transaction(database_url, sessions, make_client_key) -> None:
    task = await a_task_with_copies(sessions, (await make_client_key("owner")).id)
    async with replica(database_url, SteppedClock()) as deps:
        copier = Downloaded(deps, open_storage(deps.settings))
        with commits(deps) as seen:
            names = await runner.run_jobs(deps, copies.claim_copies, LEASE, 10, copier)
    assert names == ["stored"] * N
    assert len(seen) == 2  # the claim, and the settle of all N
    assert (await load_task(sessions, task.id)).stored_images == list(range(N))


async def test_a_batch_of_failed_copies_is_one_statement_that_never_undoes_a_stored_copy(
    database_url, sessions, make_client_key
) -> None:
    await a_task_with_copies(sessions, (await make_client_key("owner")).id)
    async with replica(database_url, SteppedClock()) as deps:
        copier = Refused(deps, open_storage(deps.settings))
        with statements(deps) as seen:
            names = await runner.run_jobs(deps, copies.claim_copies, LEASE, 10, copier, concurrency=1)
    assert names == ["failed"] * N
    # The claim (WITH ... UPDATE on PostgreSQL), the copy stored meanwhile, and the settle of all N.
    assert len(seen) == 3 and set(seen) <= {"WITH", "UPDATE"}
    async with sessions() as session:
        states = (await session.execute(select(StoredFile.state).order_by(StoredFile.n))).scalars().all()
    assert states == ["stored"] + ["failed"] * (N - 1)


async def test_a_batch_of_deliveries_is_settled_in_one_transaction_and_logged_in_one_line(
    database_url, sessions, make_client_key, caplog
) -> None:
    key = await make_client_key("owner")
    await add_deliveries(sessions, await a_task(sessions, key.id, [], "http://127.0.0.1:9/hook"))
    async with replica(database_url, SteppedClock()) as deps:
        sender = Answered(deps, statuses=(200, 503))
        with commits(deps) as seen, caplog.at_level(logging.DEBUG, logger=runner.__name__):
            names = await runner.run_jobs(deps, deliveries.claim_deliveries, LEASE, 20, sender)
    assert names == ["delivered", "pending"] * (N // 2)
    assert len(seen) == 2
    assert await count_rows(sessions, WebhookAttempt) == N
    lines = [record for record in caplog.records if record.levelno > logging.DEBUG]
    assert [(line.levelno, line.getMessage()) for line in lines] == [
        (logging.WARNING, f"Answered batch of {N}: delivered {N // 2}, pending {N // 2}; first error: HTTP 503")
    ]
    assert sum(record.levelno == logging.DEBUG for record in caplog.records) == N  # the detail, item by item


async def test_a_settle_the_database_never_took_leaves_the_rows_to_be_claimed_after_their_lease(
    database_url, sessions, make_client_key
) -> None:
    key = await make_client_key("owner")
    await add_deliveries(sessions, await a_task(sessions, key.id, [], "http://127.0.0.1:9/hook"))
    clock = SteppedClock()
    async with replica(database_url, clock) as deps:
        sender = Answered(deps, cut_after_sending=True)
        event.listen(deps.engine.sync_engine, "before_cursor_execute", sender.cut)
        with pytest.raises(Exception) as raised:
            await runner.run_jobs(deps, deliveries.claim_deliveries, LEASE, 20, sender)
    assert is_outage(raised.value) and len(sender.sent) == N
    leased = await all_deliveries(sessions)
    assert {(row.state, row.attempts) for row in leased} == {("pending", 0)}  # nothing was written
    assert all(row.next_attempt_at > clock() + LEASE - timedelta(seconds=10) for row in leased)
    assert await count_rows(sessions, WebhookAttempt) == 0

    clock.advance(LEASE)  # another replica, once the lease has run out
    async with replica(database_url, clock) as deps:
        again = Answered(deps)
        assert await runner.run_jobs(deps, deliveries.claim_deliveries, LEASE, 20, again) == ["delivered"] * N
    assert sorted(again.sent) == sorted(sender.sent)  # each sent once more: at least once, as documented
    assert {(row.state, row.attempts) for row in await all_deliveries(sessions)} == {("delivered", 1)}
    assert await count_rows(sessions, WebhookAttempt) == N
