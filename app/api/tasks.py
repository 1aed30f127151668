"""A client's tasks: listing, the catch-up feed, one task's changes as Server-Sent Events, read
tokens for browsers, and canceling one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.api.auth import owner_of
from app.deps import Deps
from app.inbound import url_values as query
from app.reads import listing
from app.tasks import links
from app.tasks.cancel import cancel_task
from app.tasks.status import current_status, read_status, status_changes

ALREADY_FINISHED = "Task has already finished; only a pending or processing task can be canceled"

KEEPALIVE_S = 15.0  # keeps proxies from closing a quiet stream


async def list_tasks(request: Request) -> JSONResponse:
    return JSONResponse(
        await listing.list_tasks(request.state.deps, await owner_of(request), dict(request.query_params))
    )


async def events_feed(request: Request) -> JSONResponse:
    return JSONResponse(await listing.feed(request.state.deps, await owner_of(request), dict(request.query_params)))


async def task_events(request: Request) -> StreamingResponse:
    """For its owner's key, or for anyone holding the task's read token (`?token=`, for EventSource)."""
    deps: Deps = request.state.deps
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    token = request.query_params.get("token")
    if token is None:
        owner, task_id = await _owned_task(request)
    else:
        owner, task_id = await _task_of_token(request, token)
        # The token is the whole credential (no cookie counts), so pages of any origin may follow the stream.
        headers["Access-Control-Allow-Origin"] = "*"
    return StreamingResponse(_sse(deps, owner, task_id), media_type="text/event-stream", headers=headers)


async def read_token(request: Request) -> JSONResponse:
    """A token that opens this one task's event stream without a key, for a browser's EventSource."""
    deps: Deps = request.state.deps
    _, task_id = await _owned_task(request)  # only the owner gets one
    token, expires = links.read_token(deps.settings, task_id, deps.clock().timestamp())
    return JSONResponse(
        {
            "token": token,
            "expiresAt": datetime.fromtimestamp(expires, UTC).isoformat(),
            "eventsUrl": f"{deps.settings.public_base_url}/api/images/tasks/{task_id}/events?token={token}",
        }
    )


async def _owned_task(request: Request) -> tuple[int, str]:
    """(the caller's key id, the path's task id) if the task is the caller's; 404 otherwise."""
    owner, task_id = await owner_of(request), request.path_params["task_id"]
    query.task_id(task_id)
    await read_status(request.state.deps, owner, task_id)
    return owner, task_id


async def _task_of_token(request: Request, token: str) -> tuple[int, str]:
    """(the task's owner, the path's task id) if `token` is a read token of that task; Forbidden otherwise."""
    deps: Deps = request.state.deps
    task_id = query.task_id(request.path_params["task_id"])
    links.check_read_token(deps.settings, task_id, token, deps.clock().timestamp())
    return (await current_status(deps, task_id)).owner, task_id  # 404 for a task that is gone


async def _sse(deps: Deps, owner: int, task_id: str) -> AsyncIterator[str]:
    changes = status_changes(deps, api_key_id=owner, task_id=task_id, keepalive_s=KEEPALIVE_S)
    async for status in changes:
        if status is None:
            yield ": keepalive\n\n"
        else:
            yield f"event: status\ndata: {status.body.decode()}\n\n"


async def cancel(request: Request) -> Response:
    """200 with the canceled task's status (also when it was canceled before); 409 with the status of
    a task that had finished otherwise."""
    owner, task_id = await owner_of(request), request.path_params["task_id"]
    query.task_id(task_id)
    status, canceled = await cancel_task(request.state.deps, api_key_id=owner, task_id=task_id)
    if canceled:
        return Response(status.body, media_type="application/json")
    return JSONResponse({"error": ALREADY_FINISHED} | json.loads(status.body), status_code=409)


routes = [
    Route("/api/images/tasks", list_tasks, methods=["GET"]),
    Route("/api/images/events", events_feed, methods=["GET"]),
    Route("/api/images/tasks/{task_id}/events", task_events, methods=["GET"]),
    Route("/api/images/tasks/{task_id}/read-token", read_token, methods=["POST"]),
    Route("/api/images/tasks/{task_id}/cancel", cancel, methods=["POST"]),
]
