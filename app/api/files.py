"""GET /api/images/{task_id}/files/{n}: a result image served from imagehook's own copy."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.api import ranges
from app.api.auth import owner_of
from app.db.tables import StoredFile
from app.deps import Deps
from app.errors import NotFound, Unavailable
from app.inbound import url_values as query
from app.outbox import copies
from app.outbox.storage import StoreUnavailable, open_storage
from app.tasks import links

if TYPE_CHECKING:
    from app.outbox.object_store import S3Storage

log = logging.getLogger(__name__)

# A stored copy never changes under its URL, so clients and their caches may keep it for good;
# private, because only the task's owner (or a holder of its signed URL) may read it.
CACHE_CONTROL = "private, max-age=31536000, immutable"
MAX_IMAGE_INDEX = 999  # far more images than any task has


async def stored_file(request: Request) -> Response:
    """For its owner's key, or for anyone holding the file's signed URL (`?token=`, app/tasks/links.py)."""
    token = request.query_params.get("token")
    if token is None:
        return await serve_copy(request, await owner_of(request))
    deps: Deps = request.state.deps
    path = request.path_params
    links.check_file_token(deps.settings, path["task_id"], path["n"], token, deps.clock().timestamp())
    response = await serve_copy(request, None)
    # The token is the whole credential (no cookie counts), so pages of any origin may read the file.
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


async def serve_copy(request: Request, owner: int | None) -> Response:
    """Image `n` of task `task_id` (path parameters), if `owner`'s (None: the operator's, anyone's)."""
    deps: Deps = request.state.deps
    task_id, n = request.path_params["task_id"], query.integer(request.path_params["n"], high=MAX_IMAGE_INDEX)
    copy = await copies.find_stored(deps, owner, task_id, n) if n is not None and query.is_task_id(task_id) else None
    if copy is None or copy.storage_key is None:  # unknown, another client's, or not copied yet: alike
        raise NotFound("File not found")
    headers = {"ETag": f'"{copy.sha256}"', "Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
    if etag_matches(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=headers)
    storage = open_storage(deps.settings)
    path = storage.path(copy.storage_key)
    if path is None:
        return await from_bucket(request, storage, copy, headers)  # type: ignore[arg-type]
    stat = await asyncio.to_thread(_stat, path)
    if stat is None:
        log.error("stored copy %s of task %s is missing from storage", n, task_id)
        raise NotFound("File not found")
    wanted = ranges.requested(
        request.headers.get("range"), request.headers.get("if-range"), headers["ETag"], stat.st_size
    )
    if isinstance(wanted, ranges.Unsatisfiable):
        return unsatisfiable(headers, stat.st_size)
    # FileResponse serves the one range ranges.requested accepted; any other Range header is ignored.
    response = FileResponse if isinstance(wanted, ranges.Part) else WholeFile
    return response(path, media_type=copy.content_type, headers=headers, stat_result=stat)


class WholeFile(FileResponse):
    """The whole file, whatever Range the request holds: Starlette's own reading of the header would
    answer a malformed one with a plain-text 400, where the RFC lets us (and the bucket path does) ignore it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(name, value) for name, value in scope["headers"] if name != b"range"]
        await super().__call__({**scope, "headers": headers}, receive, send)


def unsatisfiable(headers: dict[str, str], size: int) -> Response:
    return Response(status_code=416, headers=headers | {"Content-Range": f"bytes */{size}"})


async def from_bucket(request: Request, bucket: S3Storage, copy: StoredFile, headers: dict[str, str]) -> Response:
    """A copy in an S3 bucket: streamed through, Range and all, or (STORAGE_REDIRECT) a 302 to a presigned URL."""
    assert copy.storage_key is not None and copy.size is not None
    if request.state.deps.settings.storage_redirect:
        location = await bucket.signed_url(copy.storage_key)
        # The URL works for minutes only: nobody may keep the redirect.
        return Response(status_code=302, headers={"Location": location, "Cache-Control": "no-store"})
    wanted = ranges.requested(request.headers.get("range"), request.headers.get("if-range"), headers["ETag"], copy.size)
    headers |= {"Accept-Ranges": "bytes"}
    if isinstance(wanted, ranges.Unsatisfiable):
        return unsatisfiable(headers, copy.size)
    part = wanted if isinstance(wanted, ranges.Part) else ranges.Part(0, copy.size)
    try:
        chunks = await bucket.read(copy.storage_key, part.start, part.end)
    except StoreUnavailable as exc:
        log.error("stored copy of task %s could not be read: %s", copy.task_id, exc)
        raise Unavailable("File storage is unavailable; try again shortly") from None
    if chunks is None:
        log.error("stored copy %s of task %s is missing from storage", copy.n, copy.task_id)
        raise NotFound("File not found")
    headers |= {"Content-Length": str(part.end - part.start)}
    if isinstance(wanted, ranges.Whole):
        return StreamingResponse(chunks, 200, headers, copy.content_type)
    return StreamingResponse(chunks, 206, headers | {"Content-Range": part.content_range(copy.size)}, copy.content_type)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match uses the weak comparison, so W/"x" matches "x" (RFC 9110, 13.1.2)."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


routes = [Route("/api/images/{task_id}/files/{n}", stored_file, methods=["GET"])]
