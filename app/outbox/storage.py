"""Where copied result images live. `Storage` is what the copier and the file route need, so an
object store can replace `LocalStorage` later without touching either."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from app.settings import Settings

# Each part of a key: no leading dot, so neither ".." nor our hidden temp files can be named.
KEY_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


class StorageError(Exception):
    """A put that did not store anything."""


class TooLarge(StorageError):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"larger than {max_bytes} bytes")


class InvalidKey(StorageError, ValueError):
    pass


@dataclass(frozen=True)
class StoredObject:
    size: int
    sha256: str  # hex


class Storage(Protocol):
    async def put(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> StoredObject:
        """Store the whole stream under key, or nothing (raising TooLarge past max_bytes)."""
        ...

    def path(self, key: str) -> Path | None:
        """A local file to serve key from; None for stores that have no local files."""
        ...

    async def delete(self, key: str) -> None:
        """Remove key; a missing key is not an error."""
        ...


def open_storage(settings: Settings) -> Storage:
    return LocalStorage(Path(settings.storage_dir))


class LocalStorage:
    """Files under one directory. A put writes a temp file beside the target, fsyncs it and renames
    it into place, so a reader sees either no file or the complete one, never a partial file."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        parts = key.split("/")
        if not all(KEY_PART.fullmatch(part) for part in parts):
            raise InvalidKey(f"invalid storage key {key!r}")
        return self.root.joinpath(*parts)

    async def put(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> StoredObject:
        target = self.path(key)
        file, temp = await _in_thread(_open_temp, target)
        try:
            size, digest = 0, hashlib.sha256()
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(max_bytes)
                digest.update(chunk)
                await _in_thread(file.write, chunk)
            await _in_thread(_publish, file, temp, target)
        except BaseException:
            # Also on cancellation (a download timeout): a failed put leaves nothing behind.
            await _in_thread(_discard, file, temp)
            raise
        return StoredObject(size, digest.hexdigest())

    async def delete(self, key: str) -> None:
        await _in_thread(functools.partial(self.path(key).unlink, missing_ok=True))


async def _in_thread(func: Any, *args: Any) -> Any:
    """func(*args) in a worker thread, awaited to its end even if the caller is cancelled meanwhile
    (a download timeout), so a write can never race the cleanup of its own temp file."""
    work = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.gather(work, return_exceptions=True)
        raise


def _open_temp(target: Path) -> tuple[BinaryIO, Path]:
    """A fresh, locked temp file beside target. The lock marks it as being written: a writer that
    died (SIGKILL) releases it with its process, which is how leftovers are told from live writes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(target)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
    file = temp.open("xb")
    fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return file, temp


def _remove_leftovers(target: Path) -> None:
    for part in target.parent.glob(f".{target.name}.*.part"):
        with contextlib.suppress(OSError), part.open("rb") as file:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while its writer is alive
            part.unlink()


def _publish(file: BinaryIO, temp: Path, target: Path) -> None:
    file.flush()
    os.fsync(file.fileno())
    # Renamed while still locked, so a concurrent leftover sweep can never take it for abandoned.
    os.replace(temp, target)
    file.close()
    _fsync_dir(target.parent)  # the rename itself survives a power cut


def _discard(file: BinaryIO, temp: Path) -> None:
    file.close()
    temp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
