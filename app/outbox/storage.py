"""Where copied result images live: `STORAGE_URL`, a directory (`file:///path`, `LocalStorage`)
or an S3-compatible bucket (`s3://bucket/prefix`, app/outbox/object_store.py). `Storage` is what
the copier, the file route and purge need; each store checks size and digest on the way in alike."""

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
from urllib.parse import unquote, urlsplit

from app.settings import Settings

# Each part of a key: no leading dot, so neither ".." nor our hidden temp files can be named.
KEY_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
DEFAULT_TYPE = "application/octet-stream"


class StorageError(Exception):
    """A put that did not store anything."""


class TooLarge(StorageError):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"larger than {max_bytes} bytes")


class InvalidKey(StorageError, ValueError):
    pass


class StoreUnavailable(StorageError):
    """The store could not be reached or refused the request: worth another try later."""


@dataclass(frozen=True)
class StoredObject:
    size: int
    sha256: str  # hex


class Storage(Protocol):
    async def put(
        self, key: str, chunks: AsyncIterator[bytes], max_bytes: int, content_type: str = DEFAULT_TYPE
    ) -> StoredObject:
        """Store the whole stream under key, or nothing (raising TooLarge past max_bytes)."""
        ...

    def path(self, key: str) -> Path | None:
        """A local file to serve key from; None for stores that have no local files."""
        ...

    async def delete(self, key: str) -> None:
        """Remove key; a missing key is not an error."""
        ...


def open_storage(settings: Settings) -> Storage:
    if settings.storage_url.startswith("s3://"):
        from app.outbox.object_store import open_bucket  # only S3 deployments load the S3 client

        return open_bucket(settings.storage_url)
    return LocalStorage(Path(local_directory(settings)))


def local_directory(settings: Settings) -> str:
    """STORAGE_URL's path if it is a file:// URL, else STORAGE_DIR (its older spelling)."""
    if settings.storage_url.startswith("file://"):
        return unquote(urlsplit(settings.storage_url).path)
    return settings.storage_dir


def check_key(key: str) -> list[str]:
    """The key's parts, each a plain name: no leading dot, so neither ".." nor a hidden temp file."""
    parts = key.split("/")
    if not all(KEY_PART.fullmatch(part) for part in parts):
        raise InvalidKey(f"invalid storage key {key!r}")
    return parts


class Measured:
    """chunks passed on as they come, counted and hashed; TooLarge as soon as they add up past max_bytes."""

    def __init__(self, chunks: AsyncIterator[bytes], max_bytes: int) -> None:
        self.chunks, self.max_bytes = chunks, max_bytes
        self.size, self.digest = 0, hashlib.sha256()
        # What ended the stream, if it did not end well: the put fails with it, whoever relays it.
        self.failure: BaseException | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.chunks:
                self.size += len(chunk)
                if self.size > self.max_bytes:
                    raise TooLarge(self.max_bytes)
                self.digest.update(chunk)
                yield chunk
        except BaseException as exc:
            self.failure = exc
            raise

    def stored(self) -> StoredObject:
        return StoredObject(self.size, self.digest.hexdigest())


class LocalStorage:
    """Files under one directory. A put writes a temp file beside the target, fsyncs it and renames
    it into place, so a reader sees either no file or the complete one, never a partial file."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key))

    async def put(
        self, key: str, chunks: AsyncIterator[bytes], max_bytes: int, content_type: str = DEFAULT_TYPE
    ) -> StoredObject:
        """content_type is not kept: the file route serves the type the copy's row records."""
        target = self.path(key)
        file, temp = await _opened_temp(target)
        body = Measured(chunks, max_bytes)
        try:
            async for chunk in body:
                await _in_thread(file.write, chunk)
            await _in_thread(_publish, file, temp, target)
        except BaseException:
            # Also on cancellation (a download timeout): a failed put leaves nothing behind.
            await _in_thread(_discard, file, temp)
            raise
        return body.stored()

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


async def _opened_temp(target: Path) -> tuple[BinaryIO, Path]:
    """_open_temp in a worker thread; cancelled meanwhile, the file it made is discarded before the
    cancellation goes on (else nobody would hold it to clean up)."""
    opening = asyncio.ensure_future(asyncio.to_thread(_open_temp, target))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opened = await asyncio.gather(opening, return_exceptions=True)
        if isinstance(opened[0], tuple):
            await asyncio.to_thread(_discard, *opened[0])
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
