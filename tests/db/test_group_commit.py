"""Group commit: callbacks arriving together share one transaction, and each is answered only
after that transaction committed; one bad write never costs the others theirs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import insert, select

from app.db.tables import CallbackEvent
from app.tasks.group_commit import GroupCommit


def inbox_row(name: str) -> dict:
    now = datetime.now(UTC)
    return {"task_id": name, "provider": "kie", "received_at": now, "headers": {}, "body": "", "verdict": "test"}


class Recorder:
    """write_group that stores one inbox row per item, and refuses the item "bad"."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []

    async def __call__(self, session, items: list[str]) -> list[str]:
        self.groups.append(items)
        await session.execute(insert(CallbackEvent), [inbox_row(item) for item in items])
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]


async def stored(sessions) -> list[str]:
    async with sessions() as session:
        return sorted((await session.execute(select(CallbackEvent.task_id))).scalars())


async def test_concurrent_writes_share_a_commit_and_each_gets_its_own_result(sessions) -> None:
    recorder = Recorder()
    group = GroupCommit(sessions.begin, recorder)
    items = [f"t{i}" for i in range(20)]
    assert await asyncio.gather(*(group.run(item) for item in items)) == [item.upper() for item in items]
    assert recorder.groups == [items]  # every write that arrived before the commit began shared it
    assert await stored(sessions) == sorted(items)


async def test_a_failing_write_fails_alone_and_leaves_nothing_behind(sessions) -> None:
    recorder = Recorder()
    group = GroupCommit(sessions.begin, recorder)
    results = await asyncio.gather(*(group.run(item) for item in ("a", "bad", "b")), return_exceptions=True)
    assert results[0] == "A" and results[2] == "B" and isinstance(results[1], ValueError)
    # The group was rolled back as a whole, then each write was retried on its own.
    assert recorder.groups == [["a", "bad", "b"], ["a"], ["bad"], ["b"]]
    assert await stored(sessions) == ["a", "b"]


async def test_a_caller_that_goes_away_costs_no_one_their_write_nor_its_own(sessions) -> None:
    recorder = Recorder()
    group = GroupCommit(sessions.begin, recorder)
    gone = asyncio.create_task(group.run("gone"))
    staying = asyncio.create_task(group.run("staying"))
    await asyncio.sleep(0)  # both wait on the group now
    gone.cancel()
    assert await staying == "STAYING"
    assert gone.cancelled()
    assert await stored(sessions) == ["gone", "staying"]  # written all the same: its sender may retry


class Gated(Recorder):
    """A Recorder whose groups each wait for `release` before writing."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def __call__(self, session, items: list[str]) -> list[str]:
        await self.release.wait()
        return await super().__call__(session, items)


async def test_idle_returns_once_the_groups_are_committed_and_waits_no_longer_than_asked(sessions) -> None:
    gated = Gated()
    group = GroupCommit(sessions.begin, gated)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await group.idle(5)  # nothing gathering or committing: at once
    assert loop.time() - started < 0.5
    write = asyncio.create_task(group.run("a"))
    await asyncio.sleep(0)
    started = loop.time()
    await group.idle(0.2)  # a group that does not commit in time is not waited out
    assert 0.2 <= loop.time() - started < 1.5 and not write.done()
    waiting = asyncio.create_task(group.idle(30))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    gated.release.set()
    await asyncio.wait_for(waiting, 5)  # returns as the group commits
    assert await write == "A" and await stored(sessions) == ["a"]
