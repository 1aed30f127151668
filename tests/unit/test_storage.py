"""LocalStorage: whole files or nothing, size limits, safe keys, leftovers of a killed writer."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import threading
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import BinaryIO

import pytest

from app.outbox import storage as storage_module
from app.outbox.storage import InvalidKey, LocalStorage, TooLarge


async def stream(*chunks: bytes, pause: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
        if pause is not None:
            await pause.wait()


def files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files")


async def test_put_stores_the_stream_and_reports_size_and_sha256(storage: LocalStorage) -> None:
    chunks = [b"\x89PNG\r\n\x1a\n", b"a" * 70_000, b"end"]
    stored = await storage.put("ih_task/0", stream(*chunks), max_bytes=1_000_000)
    content = b"".join(chunks)
    assert stored.size == len(content)
    assert stored.sha256 == hashlib.sha256(content).hexdigest()
    assert storage.path("ih_task/0").read_bytes() == content
    assert files_under(storage.root) == ["ih_task/0"]


async def test_put_replaces_an_existing_file_whole(storage: LocalStorage) -> None:
    await storage.put("t/0", stream(b"first version, longer"), max_bytes=100)
    await storage.put("t/0", stream(b"second"), max_bytes=100)
    assert storage.path("t/0").read_bytes() == b"second"
    assert files_under(storage.root) == ["t/0"]


@pytest.mark.parametrize("chunks", [[b"x" * 11], [b"x" * 6, b"x" * 5], [b"x" * 10, b"", b"x"]])
async def test_over_the_limit_raises_and_leaves_nothing(storage: LocalStorage, chunks: Iterable[bytes]) -> None:
    with pytest.raises(TooLarge, match="larger than 10 bytes"):
        await storage.put("t/0", stream(*chunks), max_bytes=10)
    assert files_under(storage.root) == []


async def test_exactly_the_limit_is_stored(storage: LocalStorage) -> None:
    assert (await storage.put("t/0", stream(b"x" * 10), max_bytes=10)).size == 10


async def test_an_earlier_file_survives_a_failed_put(storage: LocalStorage) -> None:
    await storage.put("t/0", stream(b"good"), max_bytes=10)
    with pytest.raises(TooLarge):
        await storage.put("t/0", stream(b"far too long for the limit"), max_bytes=10)
    assert storage.path("t/0").read_bytes() == b"good"
    assert files_under(storage.root) == ["t/0"]


async def test_nothing_is_visible_under_the_key_until_the_put_completes(storage: LocalStorage) -> None:
    """Readers never see a partial file: the data sits in a hidden temp file until the rename."""
    pause = asyncio.Event()
    put = asyncio.create_task(storage.put("t/0", stream(b"part one", b"part two", pause=pause), max_bytes=100))
    try:
        while not list(storage.root.rglob("*.part")):
            await asyncio.sleep(0.01)
        assert not storage.path("t/0").exists()
        (temp,) = storage.root.rglob("*.part")
        assert temp.name.startswith(".0.")
    finally:
        pause.set()
    await put
    assert storage.path("t/0").read_bytes() == b"part onepart two"
    assert files_under(storage.root) == ["t/0"]


async def test_a_cancelled_put_leaves_nothing(storage: LocalStorage) -> None:
    """A download timeout cancels the put mid-stream: the temp file goes with it."""
    pause = asyncio.Event()
    put = asyncio.create_task(storage.put("t/0", stream(b"part one", b"part two", pause=pause), max_bytes=100))
    while not list(storage.root.rglob("*.part")):
        await asyncio.sleep(0.01)
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    assert files_under(storage.root) == []


async def test_a_put_cancelled_while_its_temp_file_opens_leaves_nothing(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while the worker thread is still making the temp file: nobody holds it yet."""
    opened, release = threading.Event(), threading.Event()
    open_temp = storage_module._open_temp

    def slow_open(target: Path) -> tuple[BinaryIO, Path]:
        made = open_temp(target)
        opened.set()
        release.wait(5)
        return made

    monkeypatch.setattr(storage_module, "_open_temp", slow_open)
    put = asyncio.create_task(storage.put("t/0", stream(b"bytes"), max_bytes=100))
    await asyncio.to_thread(opened.wait, 5)
    put.cancel()
    await asyncio.sleep(0.05)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await put
    assert files_under(storage.root) == []


async def test_a_failing_stream_leaves_nothing(storage: LocalStorage) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"some bytes"
        raise ConnectionError("peer went away")

    with pytest.raises(ConnectionError):
        await storage.put("t/0", broken(), max_bytes=100)
    assert files_under(storage.root) == []


async def test_a_dead_writers_leftover_is_removed_a_live_one_is_not(storage: LocalStorage) -> None:
    """A writer killed with SIGKILL leaves its temp file, unlocked; the next put of the key removes it.
    A temp file whose writer still holds its lock (a concurrent put) is left alone."""
    folder = storage.root / "t"
    folder.mkdir(parents=True)
    dead = folder / ".0.deadbeef0000.part"
    dead.write_bytes(b"half a download")
    live = folder / ".0.0123456789ab.part"
    with live.open("wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        await storage.put("t/0", stream(b"whole"), max_bytes=100)
        assert not dead.exists()
        assert live.exists()
    assert storage.path("t/0").read_bytes() == b"whole"


@pytest.mark.parametrize(
    "key", ["../escape", "t/../../escape", "/etc/passwd", "t//0", "", "t/", ".hidden/0", "t/.0.x.part", "t/0\x00"]
)
async def test_keys_that_could_leave_the_root_are_refused(storage: LocalStorage, key: str) -> None:
    with pytest.raises(InvalidKey):
        storage.path(key)
    with pytest.raises(InvalidKey):
        await storage.put(key, stream(b"x"), max_bytes=10)
    with pytest.raises(InvalidKey):
        await storage.delete(key)
    assert not storage.root.exists() or files_under(storage.root) == []


async def test_keys_map_under_the_root(storage: LocalStorage) -> None:
    assert storage.path("ih_AbC-9_x/12") == storage.root / "ih_AbC-9_x" / "12"


async def test_delete_removes_the_file_and_ignores_a_missing_one(storage: LocalStorage) -> None:
    await storage.put("t/0", stream(b"bytes"), max_bytes=10)
    await storage.delete("t/0")
    assert not storage.path("t/0").exists()
    await storage.delete("t/0")
    await storage.delete("never/stored")
