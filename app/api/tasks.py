"""A client's tasks: listing, the catch-up feed, and one task's changes as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from app.api.auth import owner_of
from app.deps import Deps
from app.inbound import url_values as query
from app.reads import listing
from app.tasks.status import read_status, status_changes

KEEPALIVE_S = 15.0  # keeps proxies from closing a quiet stream


async def list_tasks(request: Request) -> JSONResponse:
    return JSONResponse(
        await listing.list_tasks(request.state.deps, await owner_of(request), dict(request.query_params))
    )


async def events_feed(request: Request) -> JSONResponse:
    return JSONResponse(await listing.feed(request.state.deps, await owner_of(request), dict(request.query_params)))


async def task_events(request: Request) -> StreamingResponse:
    deps: Deps = request.state.deps
    owner, task_id = await owner_of(request), request.path_params["task_id"]
    query.task_id(task_id)
    await read_status(deps, owner, task_id)  # 404 before the stream starts
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_sse(deps, owner, task_id), media_type="text/event-stream", headers=headers)


async def _sse(deps: Deps, owner: int, task_id: str) -> AsyncIterator[str]:
    changes = status_changes(deps, api_key_id=owner, task_id=task_id, keepalive_s=KEEPALIVE_S)
    async for status in changes:
        if status is None:
            yield ": keepalive\n\n"
        else:
            yield f"event: status\ndata: {status.body.decode()}\n\n"


routes = [
    Route("/api/images/tasks", list_tasks, methods=["GET"]),
    Route("/api/images/events", events_feed, methods=["GET"]),
    Route("/api/images/tasks/{task_id}/events", task_events, methods=["GET"]),
]
