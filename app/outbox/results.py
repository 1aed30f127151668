"""A result image's bytes, for answers that carry the image itself (OpenAI's `b64_json`): read from imagehook's
own copy once it is stored, else fetched from the provider's URL under the copier's rules (app/outbox/copies.py:
allowed hosts at every redirect, public addresses only, image types, STORAGE_MAX_BYTES, COPY_TIMEOUT_S)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from app.db.tables import StoredFile
from app.deps import Deps
from app.errors import BadGateway, GiveUp, RetryLater
from app.outbox import copies
from app.outbox.storage import Measured, StoreUnavailable, open_storage

if TYPE_CHECKING:
    from app.outbox.object_store import S3Storage

log = logging.getLogger(__name__)


async def read_result(deps: Deps, api_key_id: int, task_id: str, n: int, url: str) -> bytes:
    """Image n of the client's task; `url` is where its status says it is. BadGateway if it cannot be had."""
    copy = await copies.find_stored(deps, api_key_id, task_id, n)
    if copy is not None and copy.storage_key is not None:
        if (content := await read_copy(deps, copy)) is not None:
            return content
        url = copy.source_url  # the copy is unreadable: the provider may still have the original
    try:
        return await copies.counted(copies.download(deps, url, in_memory(deps.settings.storage_max_bytes)))
    except (RetryLater, GiveUp) as exc:
        raise BadGateway(f"Image {n} of task {task_id} could not be read: {exc}") from None


def in_memory(max_bytes: int) -> Callable[[str, AsyncIterator[bytes]], Awaitable[bytes]]:
    """A consumer for copies.download that keeps the body, up to max_bytes (TooLarge beyond)."""

    async def collect(media_type: str, body: AsyncIterator[bytes]) -> bytes:
        return b"".join([chunk async for chunk in Measured(body, max_bytes)])

    return collect


async def read_copy(deps: Deps, copy: StoredFile) -> bytes | None:
    """The stored copy's bytes; None (and an error logged) when the store has lost it or cannot be read."""
    assert copy.storage_key is not None
    storage = open_storage(deps.settings)
    path = storage.path(copy.storage_key)
    try:
        if path is not None:
            return await asyncio.to_thread(path.read_bytes)
        bucket: S3Storage = storage  # type: ignore[assignment]
        chunks = await bucket.read(copy.storage_key, 0, copy.size or 0)
        if chunks is not None:
            return b"".join([chunk async for chunk in chunks])
    except (OSError, StoreUnavailable) as exc:
        log.error("stored copy %s of task %s could not be read: %s", copy.n, copy.task_id, exc)
        return None
    log.error("stored copy %s of task %s is missing from storage", copy.n, copy.task_id)
    return None
