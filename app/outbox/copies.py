"""Copying result images to imagehook's own storage before the provider's URLs expire.

Like webhook deliveries, through app/outbox/runner.py: the sweeper claims due rows with a lease,
downloads each outside any transaction and records the outcomes together in a short one. A copy
cut off by a restart keeps its lease until it expires and is then simply done again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import uploads
from app.db import queries
from app.db.tables import StoredFile, Task
from app.db.task_writer import TaskHead
from app.deps import Deps
from app.errors import BadRequest, GiveUp, RetryLater
from app.inbound.untrusted import clean_text
from app.observe.logs import about_task
from app.observe.metrics import UPSTREAM_CALLS, labelled
from app.outbox import runner
from app.outbox.outbound import DestinationRefused
from app.outbox.storage import Storage, StorageError, StoredObject, StoreUnavailable, TooLarge, open_storage
from app.providers.http import retry_after
from app.settings import Settings
from app.tasks.domain import Backoff

BATCH_SIZE = 10  # also the most downloads at once per sweeper: a batch runs concurrently
COPY_BACKOFF = Backoff(base_s=2.0, cap_s=300.0)
# The longest a batch waits for callbacks to pause: during a burst, copies go on at BATCH_SIZE a second.
YIELD_TO_CALLBACKS_S = 1.0
# Kie's shortest documented URL lifetime: after it there is nothing left to copy.
GIVE_UP_AFTER = timedelta(hours=24)
MAX_REDIRECTS = 3
SNIFF_BYTES = 12  # enough for every image signature (WebP's is the longest)
GIF_MAGIC = (b"GIF87a", b"GIF89a")
TRANSIENT_STATUSES = frozenset({408, 429})  # and every 5xx
T = TypeVar("T")


@dataclass(frozen=True)
class Copied:
    stored: StoredObject
    content_type: str


def copy_rows(task: TaskHead, now: datetime) -> list[dict[str, Any]]:
    """One row per result image, written with the success itself: a crash cannot lose the copy."""
    return [
        {"task_id": task.id, "n": n, "source_url": url, "state": "pending", "next_attempt_at": now, "created_at": now}
        for n, url in enumerate(task.image_urls)
    ]


def storage_key(task_id: str, n: int) -> str:
    return f"{task_id}/{n}"


def lease_s(settings: Settings) -> float:
    # The whole download and write run under copy_timeout_s; the margin covers recording the result.
    return settings.copy_timeout_s + 10


async def copy_due(deps: Deps, limit: int = BATCH_SIZE) -> Counter[str]:
    """Copy every due image of one batch, concurrently. Returns what was done."""
    # Each result of a burst of callbacks is a copy to make, and each batch two write transactions
    # that a callback group would queue behind: copies, good for a day, wait for a gap instead.
    await deps.group_commits_idle(YIELD_TO_CALLBACKS_S)
    lease = timedelta(seconds=lease_s(deps.settings))
    copier = Copier(deps, open_storage(deps.settings))
    outcomes = await runner.run_jobs(deps, claim_copies, lease, limit, copier)
    return Counter(f"copy_{outcome}" for outcome in outcomes)


async def claim_copies(session: AsyncSession, now: datetime, lease_until: datetime, limit: int) -> Sequence[StoredFile]:
    return await queries.claim(session, StoredFile.next_attempt_at, now, lease_until, limit)


@dataclass(frozen=True)
class Copier:
    """Copying one image (runner.Job): stored, skipped, or a failure to retry or give up on."""

    deps: Deps
    storage: Storage

    def describe(self, row: StoredFile) -> str:
        return f"copying image {row.n} of {row.task_id}"

    async def work(self, row: StoredFile) -> Copied:
        with about_task(row.task_id):
            return await counted(fetch(self.deps, self.storage, row))

    async def settle(
        self, session: AsyncSession, group: Sequence[tuple[StoredFile, Copied | runner.Failure]]
    ) -> list[str]:
        now = self.deps.clock()
        failed = [(row, outcome) for row, outcome in group if not isinstance(outcome, Copied)]
        names = dict(zip((row.id for row, _ in failed), await record_failures(session, now, failed), strict=True))
        for row, outcome in group:
            if isinstance(outcome, Copied):
                names[row.id] = await record_stored(session, now, row, outcome)
        return [names[row.id] for row, _ in group]

    async def rescue(self, session: AsyncSession, row: StoredFile, outcome: Copied | runner.Failure) -> str:
        # A copy that could not be recorded is made again: it goes to the same key, so nothing is left over.
        failure = RetryLater("the copy could not be recorded") if isinstance(outcome, Copied) else outcome
        (name,) = await record_failures(session, self.deps.clock(), [(row, failure)])
        return name


async def counted(download: Awaitable[T]) -> T:
    """A download of a result, counted in imagehook_upstream_calls_total by its outcome."""
    try:
        result = await download
    except (RetryLater, GiveUp) as exc:
        outcome = "timeout" if str(exc).startswith("timed out") else "transient"
        labelled(UPSTREAM_CALLS, "files", "result", "rejected" if isinstance(exc, GiveUp) else outcome).inc()
        raise
    labelled(UPSTREAM_CALLS, "files", "result", "ok").inc()
    return result


async def fetch(deps: Deps, storage: Storage, row: StoredFile) -> Copied:
    """Download row's image straight into storage, checking it on the way; RetryLater or GiveUp says why not."""
    key, max_bytes = storage_key(row.task_id, row.n), deps.settings.storage_max_bytes

    async def store(media_type: str, body: AsyncIterator[bytes]) -> Copied:
        return Copied(await storage.put(key, body, max_bytes, media_type), media_type)

    return await download(deps, row.source_url, store)


async def download(deps: Deps, url: str, consume: Callable[[str, AsyncIterator[bytes]], Awaitable[T]]) -> T:
    """GET a result image and hand its sniffed type and body to `consume`, under the copier's rules: allowed
    hosts at every redirect, public addresses, image types, STORAGE_MAX_BYTES, COPY_TIMEOUT_S. RetryLater or
    GiveUp says why not."""
    settings = deps.settings
    try:
        async with asyncio.timeout(settings.copy_timeout_s):
            response = await open_image(deps, url)
            try:
                check_response(response, settings.storage_max_bytes)
                media_type, body = await sniffed(aiter(response.aiter_bytes()))
                return await consume(media_type, body)
            finally:
                await response.aclose()
    except TimeoutError:
        raise RetryLater(f"timed out after {settings.copy_timeout_s:g} s") from None
    # Network trouble, a cut-off or undecodable body, a store out of reach: worth another try.
    except (httpx.HTTPError, StoreUnavailable) as exc:
        raise RetryLater(f"{type(exc).__name__}: {exc}"[:500]) from None
    except (StorageError, httpx.InvalidURL, DestinationRefused) as exc:  # too large; a URL, key or address never works
        raise GiveUp(str(exc)[:500]) from None


async def open_image(deps: Deps, url: str) -> httpx.Response:
    """GET url as a stream. Redirects are followed by hand, so that every hop is checked against
    the allowlist: no URL a provider hands us can make imagehook fetch from anywhere else. The client
    checks each address it connects to as well (app/outbox/outbound.py)."""
    http = deps.outbound.copies
    request = http.build_request("GET", url, timeout=deps.settings.copy_timeout_s)
    for _ in range(MAX_REDIRECTS + 1):
        if not host_allowed(request.url, deps.settings.fetch_allowed_hosts):
            raise GiveUp("host not allowed")
        response = await http.send(request, stream=True)
        if response.next_request is None:
            return response
        await response.aclose()
        request = response.next_request
    raise GiveUp("too many redirects")


def host_allowed(url: httpx.URL, patterns: Sequence[str]) -> bool:
    """Exact host names, or `*.domain` for any subdomain of domain (not domain itself); any port."""
    host = url.host.rstrip(".").lower()
    if url.scheme not in ("http", "https") or not host:
        return False
    patterns = [pattern.lower() for pattern in patterns]
    return any(host.endswith(p[1:]) if p.startswith("*.") else host == p for p in patterns)


def check_response(response: httpx.Response, max_bytes: int) -> None:
    """Refuse, before reading the body, what cannot become a stored image."""
    status = response.status_code
    if status in TRANSIENT_STATUSES or status >= 500:
        raise RetryLater(f"HTTP {status}", retry_after(response))
    if not 200 <= status < 300:
        raise GiveUp(f"HTTP {status}")
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not media_type.startswith("image/"):
        raise GiveUp(f"not an image: {media_type or 'no Content-Type'}")
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise GiveUp(str(TooLarge(max_bytes)))


def image_type(head: bytes) -> str | None:
    """The type the bytes themselves show: the upload formats (PNG, JPEG, WebP) or GIF; None otherwise."""
    if head.startswith(GIF_MAGIC):
        return "image/gif"
    try:
        return uploads.sniff(head)[0]
    except BadRequest:
        return None


async def sniffed(chunks: AsyncIterator[bytes]) -> tuple[str, AsyncIterator[bytes]]:
    """The image type the body's first bytes show (which is what gets served, not the sender's
    claim), and the whole body, unchanged. GiveUp if they show no image."""
    head = b""
    async for chunk in chunks:
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
    media_type = image_type(head)
    if media_type is None:
        raise GiveUp("not an image: the bytes are not PNG, JPEG, WebP or GIF")

    async def whole() -> AsyncIterator[bytes]:
        yield head
        async for chunk in chunks:
            yield chunk

    return media_type, whole()


async def record_stored(session: AsyncSession, now: datetime, row: StoredFile, copied: Copied) -> str:
    values = {
        "state": "stored",
        "storage_key": storage_key(row.task_id, row.n),
        "size": copied.stored.size,
        "sha256": copied.stored.sha256,
        "content_type": copied.content_type,
        "stored_at": now,
        "next_attempt_at": None,
        "attempts": row.attempts + 1,
        "error": None,
    }
    # This row's write comes first: on SQLite it takes the database's write lock before the task is read.
    if not await settle(session, row, values):
        return "skipped"  # a copier whose lease had expired finished first; the file is the same
    await add_stored_image(session, row.task_id, row.n, now)
    return "stored"


async def add_stored_image(session: AsyncSession, task_id: str, n: int, now: datetime) -> None:
    """Append n to the task's stored_images. A read-modify-write of a JSON list, so the task row is
    locked first (FOR UPDATE on PostgreSQL; SQLite's single writer lock is already held): two copies
    of one task's images finishing at once cannot drop each other's index."""
    # populate_existing: a task another copy of the same batch already changed is read afresh.
    stmt = select(Task).where(Task.id == task_id).with_for_update().execution_options(populate_existing=True)
    task = (await session.execute(stmt)).scalar_one_or_none()
    if task is None or n in (task.stored_images or []):  # purged meanwhile, or already there
        return
    stored = sorted({*(task.stored_images or []), n})
    # updated_at moves: the status object (its image URLs) changed.
    await session.execute(update(Task).where(Task.id == task_id).values(stored_images=stored, updated_at=now))
    queries.mark_changed(session, [task_id])


async def record_failures(
    session: AsyncSession, now: datetime, failed: Sequence[tuple[StoredFile, runner.Failure]]
) -> list[str]:
    """GiveUp fails at once; RetryLater retries with backoff (no sooner than a Retry-After) until
    the provider's URL has surely expired. One statement for them all; a row no longer pending
    (stored meanwhile by a copier whose lease had run out) is left as it is."""
    writes = []
    for row, failure in failed:
        retry = runner.next_attempt(failure, COPY_BACKOFF, row.attempts + 1, now, row.created_at + GIVE_UP_AFTER)
        message = clean_text(failure.message, 500)  # it may quote what a remote server sent
        state = "failed" if retry is None else "pending"
        writes.append(
            {"row_id": row.id, "state": state, "attempts": row.attempts + 1, "next_attempt_at": retry, "error": message}
        )
    if writes:
        files = StoredFile.__table__
        await session.execute(
            update(files).where(files.c.id == bindparam("row_id"), files.c.state == "pending"), writes
        )
    return ["failed" if write["next_attempt_at"] is None else "retry" for write in writes]


async def settle(session: AsyncSession, row: StoredFile, values: dict[str, object]) -> bool:
    """Write an attempt's outcome unless the row is no longer pending (never undo a stored copy)."""
    # On the table, not the ORM entity: a plain Core statement skips the ORM's bulk-update machinery,
    # which cost more than the statement itself, once per image.
    files = StoredFile.__table__
    stmt = update(files).where(files.c.id == row.id, files.c.state == "pending").values(**values).returning(files.c.id)
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def find_stored(deps: Deps, api_key_id: int | None, task_id: str, n: int) -> StoredFile | None:
    """Image n of a task of this client (None: of anyone, for the operator), if its copy is stored;
    None for anything else alike."""
    stmt = (
        select(StoredFile)
        .join(Task, Task.id == StoredFile.task_id)
        .where(StoredFile.task_id == task_id, StoredFile.n == n, StoredFile.state == "stored")
    )
    if api_key_id is not None:
        stmt = stmt.where(Task.api_key_id == api_key_id)
    async with deps.sessions() as session:
        return (await session.execute(stmt)).scalar_one_or_none()
