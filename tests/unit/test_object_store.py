"""S3Storage against a real S3-protocol server on loopback (moto's): what holds for local copies
holds here. Whole objects or none, size limits, digests, safe keys, ranges, presigned URLs, a
store that is down said as such, and a 50 MB upload in bounded memory."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest

from app.outbox.object_store import PART_BYTES, S3Storage, open_bucket
from app.outbox.storage import InvalidKey, StoreUnavailable, TooLarge
from tests.support.s3 import S3Server
from tests.unit.test_storage import stream


@pytest.fixture
def storage(bucket: str) -> S3Storage:
    return open_bucket(f"s3://{bucket}/copies")


async def read_all(storage: S3Storage, key: str, start: int, end: int) -> bytes:
    chunks = await storage.read(key, start, end)
    assert chunks is not None
    return b"".join([chunk async for chunk in chunks])


async def test_put_stores_the_stream_under_the_prefix_and_reports_size_and_sha256(
    storage: S3Storage,
    s3_server: S3Server,
    bucket: str,
) -> None:
    chunks = [b"\x89PNG\r\n\x1a\n", b"a" * 70_000, b"end"]
    stored = await storage.put("ih_task/0", stream(*chunks), max_bytes=1_000_000, content_type="image/png")
    content = b"".join(chunks)
    assert (stored.size, stored.sha256) == (len(content), hashlib.sha256(content).hexdigest())
    assert await read_all(storage, "ih_task/0", 0, len(content)) == content
    assert await read_all(storage, "ih_task/0", 3, 10) == content[3:10]
    assert s3_server.keys(bucket) == ["copies/ih_task/0"]


async def test_a_presigned_url_serves_the_object_with_its_type_to_anyone(storage: S3Storage) -> None:
    await storage.put("t/0", stream(b"GIF89a-bytes"), max_bytes=100, content_type="image/gif")
    url = await storage.signed_url("t/0")
    async with httpx.AsyncClient() as anyone:
        response = await anyone.get(url)
    assert response.status_code == 200 and response.content == b"GIF89a-bytes"
    assert response.headers["content-type"] == "image/gif"
    assert "X-Amz-Expires=300" in url and "X-Amz-Signature=" in url


async def test_put_replaces_an_existing_object_whole(storage: S3Storage) -> None:
    await storage.put("t/0", stream(b"first version, longer"), max_bytes=100)
    await storage.put("t/0", stream(b"second"), max_bytes=100)
    assert await read_all(storage, "t/0", 0, 6) == b"second"


@pytest.mark.parametrize("chunks", [[b"x" * 11], [b"x" * 6, b"x" * 5], [b"x" * 10, b"", b"x"]])
async def test_over_the_limit_raises_and_leaves_nothing_not_even_an_upload(
    storage: S3Storage,
    s3_server: S3Server,
    bucket: str,
    chunks: list[bytes],
) -> None:
    with pytest.raises(TooLarge, match="larger than 10 bytes"):
        await storage.put("t/0", stream(*chunks), max_bytes=10)
    assert s3_server.keys(bucket) == []


async def test_an_earlier_object_survives_a_failed_put(
    storage: S3Storage,
    s3_server: S3Server,
    bucket: str,
) -> None:
    await storage.put("t/0", stream(b"good"), max_bytes=10)
    with pytest.raises(TooLarge):
        await storage.put("t/0", stream(b"far too long for the limit"), max_bytes=10)
    assert await read_all(storage, "t/0", 0, 4) == b"good"
    assert s3_server.keys(bucket) == ["copies/t/0"]


async def test_a_failing_stream_leaves_nothing(storage: S3Storage, s3_server: S3Server, bucket: str) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * (PART_BYTES + 1)  # one part already uploaded
        raise ConnectionError("peer went away")

    with pytest.raises(ConnectionError):
        await storage.put("t/0", broken(), max_bytes=PART_BYTES * 4)
    assert s3_server.keys(bucket) == []


@pytest.mark.parametrize("key", ["../escape", "t/../../escape", "/etc/passwd", "t//0", "", "t/", ".hidden/0"])
async def test_keys_that_could_leave_the_prefix_are_refused(
    storage: S3Storage,
    s3_server: S3Server,
    bucket: str,
    key: str,
) -> None:
    with pytest.raises(InvalidKey):
        await storage.put(key, stream(b"x"), max_bytes=10)
    for touch in (storage.delete(key), storage.read(key, 0, 1), storage.signed_url(key)):
        with pytest.raises(InvalidKey):
            await touch
    assert s3_server.keys(bucket) == []


async def test_delete_removes_the_object_and_ignores_a_missing_one(
    storage: S3Storage,
    s3_server: S3Server,
    bucket: str,
) -> None:
    await storage.put("t/0", stream(b"bytes"), max_bytes=10)
    await storage.delete("t/0")
    await storage.delete("t/0")
    await storage.delete("never/stored")
    assert s3_server.keys(bucket) == [] and await storage.read("t/0", 0, 1) is None


async def test_a_store_that_is_down_is_said_to_be_unavailable(storage: S3Storage, s3_server: S3Server) -> None:
    s3_server.stop()
    try:
        for attempt in (
            storage.put("t/0", stream(b"bytes"), max_bytes=10),
            storage.read("t/0", 0, 1),
            storage.delete("t/0"),
        ):
            with pytest.raises(StoreUnavailable, match="^storage: "):
                await asyncio.wait_for(attempt, timeout=30)
    finally:
        s3_server.start()


async def test_a_50_mb_upload_is_streamed_in_bounded_memory(storage: S3Storage) -> None:
    size, peak = 50 * 1024 * 1024, 0
    baseline = resident_bytes()

    async def generated() -> AsyncIterator[bytes]:
        nonlocal peak
        for _ in range(size // (256 * 1024)):
            peak = max(peak, resident_bytes() - baseline)
            yield b"\xab" * (256 * 1024)

    stored = await storage.put("big/0", generated(), max_bytes=size)
    assert stored.size == size
    # Two 5 MB parts in flight and their buffers; the whole image would be 50 MB more.
    assert peak < 30 * 1024 * 1024, f"resident memory grew by {peak / 2**20:.0f} MB"


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096
