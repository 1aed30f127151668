"""GET /api/images/{task_id}/files/{n}: a result image served from imagehook's own copy."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from app.api.auth import owner_of
from app.deps import Deps
from app.errors import NotFound
from app.inbound import url_values as query
from app.outbox import copies
from app.outbox.storage import open_storage

log = logging.getLogger(__name__)

# A stored copy never changes under its URL, so clients and their caches may keep it for good;
# private, because only the task's owner may read it.
CACHE_CONTROL = "private, max-age=31536000, immutable"
MAX_IMAGE_INDEX = 999  # far more images than any task has


async def stored_file(request: Request) -> Response:
    deps: Deps = request.state.deps
    owner = await owner_of(request)
    task_id, n = request.path_params["task_id"], query.integer(request.path_params["n"], high=MAX_IMAGE_INDEX)
    copy = await copies.find_stored(deps, owner, task_id, n) if n is not None and query.is_task_id(task_id) else None
    if copy is None or copy.storage_key is None:  # unknown, another client's, or not copied yet: alike
        raise NotFound("File not found")
    headers = {"ETag": f'"{copy.sha256}"', "Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
    if etag_matches(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=headers)
    # Only local storage exists so far; an object store would answer with a redirect here instead.
    path = open_storage(deps.settings).path(copy.storage_key)
    stat = await asyncio.to_thread(_stat, path) if path is not None else None
    if stat is None:
        log.error("stored copy %s of task %s is missing from storage", n, task_id)
        raise NotFound("File not found")
    # FileResponse answers Range requests (206, 416) itself; If-Range compares with our ETag.
    return FileResponse(path, media_type=copy.content_type, headers=headers, stat_result=stat)


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
