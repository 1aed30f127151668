"""Coalesced: many readers, one read at a time, and no reader waits once a value is at hand."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.reads.coalesced import Coalesced


class Source:
    """A value that counts how often it is read, each read taking `delay_s`."""

    def __init__(self, delay_s: float = 0.01) -> None:
        self.reads, self.delay_s, self.fail = 0, delay_s, False

    async def read(self) -> int:
        self.reads += 1
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise ConnectionError("database out")
        return self.reads


async def test_readers_arriving_together_share_one_read() -> None:
    cache: Coalesced[int] = Coalesced(ttl_s=60)
    source = Source()
    values = await asyncio.gather(*(cache.get("line", source.read) for _ in range(50)))
    assert values == [1] * 50 and source.reads == 1


async def test_a_stale_value_is_served_at_once_while_it_is_read_again() -> None:
    cache: Coalesced[int] = Coalesced(ttl_s=0.05)
    source = Source(delay_s=0.2)
    assert await cache.get("line", source.read) == 1
    await asyncio.sleep(0.06)
    started = time.monotonic()
    assert await cache.get("line", source.read) == 1  # stale, but no wait for the read it starts
    assert time.monotonic() - started < 0.1
    assert cache.peek("line", source.read) == 1  # the read already running is not started twice
    await asyncio.sleep(0.25)
    assert cache.peek("line", source.read) == 2 and source.reads == 2


async def test_a_reader_asking_for_a_later_read_waits_for_one() -> None:
    cache: Coalesced[int] = Coalesced(ttl_s=60)
    source = Source()
    await cache.get("line", source.read)
    asked_at = time.monotonic()
    assert await cache.get("line", source.read, begun_after=asked_at) == 2
    assert await cache.get("line", source.read, begun_after=asked_at) == 2  # that read serves it now


async def test_peek_without_a_value_starts_a_read_and_a_failed_background_read_keeps_the_old_value() -> None:
    cache: Coalesced[int] = Coalesced(ttl_s=0.01)
    source = Source()
    assert cache.peek("line", source.read) is None
    await asyncio.sleep(0.05)
    assert cache.peek("line", source.read) == 1  # and, being stale, is read again
    source.fail = True
    await asyncio.sleep(0.05)
    assert cache.peek("line", source.read) == 1
    with pytest.raises(ConnectionError):  # a reader that must have a fresh value hears of the failure
        await cache.get("line", source.read, begun_after=time.monotonic())
