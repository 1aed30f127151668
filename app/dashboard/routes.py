"""GET /dashboard and what its page reads: the operator's view of every client's tasks.

The page is three files of this package (HTML, vanilla JS, CSS), served as they are: no build
step, nothing fetched from elsewhere (a Content-Security-Policy of 'self' holds the page to
that; images may come from providers' hosts). It reads JSON from /dashboard/api/* and follows
/dashboard/api/stream, Server-Sent Events of the task event table (every replica's changes,
within a second); only the sign-in form and sign-out are POSTs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from importlib import resources
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from app.api.body import read_body
from app.api.files import serve_copy
from app.dashboard import access, queries
from app.deps import Deps
from app.errors import GatewayError, NotFound
from app.inbound import url_values as query
from app.reads.listing import changes_after, latest_event_id

POLL_S = 1.0  # how often an open stream looks for new events
KEEPALIVE_S = 15.0
STREAM_BATCH = 200
SIGN_IN_BODY_BYTES = 4096
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' https: http:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css", "favicon.svg": "image/svg+xml"}


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text()


async def page(request: Request) -> Response:
    """The dashboard for the operator; the sign-in form (401) for anyone else."""
    try:
        await access.require_admin(request)
    except GatewayError as exc:
        if isinstance(exc, NotFound):
            raise
        return _sign_in_page(exc.message, exc.status)
    return Response(_asset("dashboard.html"), media_type="text/html", headers=PAGE_HEADERS)


def _sign_in_page(message: str, status: int) -> Response:
    html = _asset("sign-in.html").replace("{message}", _escaped(message))
    return Response(html, status_code=status, media_type="text/html", headers=PAGE_HEADERS)


def _escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


async def sign_in(request: Request) -> Response:
    settings = request.state.deps.settings
    access.admin_key(settings)
    raw = await read_body(request, SIGN_IN_BODY_BYTES)
    key = parse_qs(raw.decode("utf-8", "replace")).get("key", [""])[0]
    if not access.is_admin_key(settings, key):
        return _sign_in_page("That is not the admin key", 401)
    response = RedirectResponse("/dashboard", status_code=303)
    secure = request.url.scheme == "https" or settings.public_base_url.startswith("https:")
    response.set_cookie(
        access.COOKIE,
        access.session_cookie(settings),
        max_age=access.SESSION_S,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=secure,
    )
    return response


async def sign_out(request: Request) -> Response:
    response = RedirectResponse("/dashboard", status_code=303)
    response.delete_cookie(access.COOKIE, path="/dashboard")
    return response


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        raise NotFound("Not Found")
    return Response(_asset(name), media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})


async def summary(request: Request) -> JSONResponse:
    await access.require_admin(request)
    request.app.state.dashboard_summary = await queries.summary(
        request.state.deps, getattr(request.app.state, "dashboard_summary", None)
    )
    return JSONResponse(request.app.state.dashboard_summary.value, headers={"Cache-Control": "no-store"})


async def tasks(request: Request) -> JSONResponse:
    await access.require_admin(request)
    listed = await queries.recent_tasks(request.state.deps, dict(request.query_params))
    return JSONResponse(listed, headers={"Cache-Control": "no-store"})


async def task(request: Request) -> JSONResponse:
    await access.require_admin(request)
    detail = await queries.task_detail(request.state.deps, request.path_params["task_id"])
    return JSONResponse(detail, headers={"Cache-Control": "no-store"})


async def file(request: Request) -> Response:
    await access.require_admin(request)
    return await serve_copy(request, None)


async def stream(request: Request) -> StreamingResponse:
    """Every task created and every state change from now (or after Last-Event-ID), as they commit anywhere."""
    await access.require_admin(request)
    deps: Deps = request.state.deps
    resume_at = request.headers.get("last-event-id")  # EventSource sends it when it reconnects
    after = query.integer(resume_at) if resume_at is not None else None
    if after is None:
        after = await latest_event_id(deps)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_events(deps, after), media_type="text/event-stream", headers=headers)


async def _events(deps: Deps, after: int) -> AsyncIterator[str]:
    quiet_s = 0.0
    yield "retry: 2000\n\n"
    while not deps.draining:
        changes = await changes_after(deps, after, STREAM_BATCH, None)
        for event in changes:
            body = {"id": event.id, "taskId": event.task_id, "state": event.to_state, "outcome": event.outcome}
            yield f"id: {event.id}\nevent: change\ndata: {json.dumps(body)}\n\n"
            after = event.id
        quiet_s = 0.0 if changes else quiet_s + POLL_S
        if quiet_s >= KEEPALIVE_S:
            yield ": keepalive\n\n"
            quiet_s = 0.0
        if len(changes) < STREAM_BATCH:
            await asyncio.sleep(POLL_S)


routes = [
    Route("/dashboard", page, methods=["GET"]),
    Route("/dashboard/sign-in", sign_in, methods=["POST"]),
    Route("/dashboard/sign-out", sign_out, methods=["POST"]),
    Route("/dashboard/static/{name}", asset, methods=["GET"]),
    Route("/dashboard/api/summary", summary, methods=["GET"]),
    Route("/dashboard/api/tasks", tasks, methods=["GET"]),
    Route("/dashboard/api/tasks/{task_id}", task, methods=["GET"]),
    Route("/dashboard/api/stream", stream, methods=["GET"]),
    Route("/dashboard/files/{task_id}/{n}", file, methods=["GET"]),
]
