"""The ASGI application: routes, error mapping, and the lifespan that owns Deps and the sweeper."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy.exc import DataError, SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from app.api import (
    callbacks,
    catalogue,
    files,
    health,
    images,
    metrics,
    openai_images,
    openapi,
    tasks,
    uploads,
    usage,
    webhooks,
)
from app.api.guard import RefuseNul
from app.api.shortcuts import answered_from_cache, callback_lane, is_plain_callback, is_plain_status_read, status_lane
from app.dashboard import routes as dashboard
from app.db.migrate import head_revision
from app.db.outage import is_outage
from app.deps import Deps, open_deps, utc_now
from app.errors import DatabaseUnavailable, GatewayError
from app.keys import keep_key_use
from app.observe.requests import Observed
from app.outbox.outbound import Resolver, resolve
from app.reads.watch import listen_postgres, watch_sqlite
from app.settings import Settings
from app.tasks import openai_compat
from app.tasks.sweeper import run_sweeper

log = logging.getLogger(__name__)


class AppState(TypedDict):
    deps: Deps
    schema_head: str | None


ROUTE_MODULES = (
    images,
    openai_images,
    files,
    tasks,
    catalogue,
    uploads,
    webhooks,
    usage,
    callbacks,
    health,
    metrics,
    openapi,
    dashboard,
)
ROUTES = [route for module in ROUTE_MODULES for route in module.routes]


class Gateway(Starlette):
    """Starlette, but provider callbacks and plain status reads go past its middleware stack
    (app/api/shortcuts.py): they are the requests that come by the thousand per second."""

    def __init__(self, *, access_log: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.callback_lane = callback_lane(self.exception_handlers, access_log)
        self.status_lane = status_lane(self.exception_handlers, access_log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_plain_callback(scope):
            await self.callback_lane(scope, receive, send)
        elif await answered_from_cache(scope, send):
            return
        elif is_plain_status_read(scope):
            await self.status_lane(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    run_sweeper_in_process: bool = True,
    resolver: Resolver = resolve,
    clock: Callable[[], datetime] = utc_now,
) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[AppState]:
        async with open_deps(settings, resolver=resolver, clock=clock) as deps:
            # Everything imported and built so far lives as long as the process: keep it out of the
            # collector's full passes, which otherwise stall every request for tens of milliseconds.
            gc.collect()
            gc.freeze()
            stopping = asyncio.Event()
            loops, listeners = [], []
            if run_sweeper_in_process and settings.sweep_interval_s > 0:
                loops.append(asyncio.create_task(run_sweeper(deps, settings.sweep_interval_s, stopping)))
            loops.append(asyncio.create_task(keep_key_use(deps, stopping)))
            listeners.append(asyncio.create_task(watch_changes(deps)))
            app.state.announce_draining = functools.partial(setattr, deps, "draining", True)
            app.state.drain = functools.partial(drain, app, deps, stopping)
            try:
                yield {"deps": deps, "schema_head": head_revision(settings.database_url)}
            finally:
                drain(app, deps, stopping)
                # One grace for everything: the loops have been winding down since the drain began.
                grace_left = settings.shutdown_grace_s - (time.monotonic() - app.state.draining_since)
                await stop_tasks(listeners, grace_s=0)
                await stop_tasks(loops, grace_s=max(grace_left, 0.0))

    handlers = exception_handlers()
    middleware = [
        Middleware(Observed, access_log=settings.access_log),
        Middleware(RefuseNul),
    ]
    return Gateway(
        routes=ROUTES,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers=handlers,
        access_log=settings.access_log,
    )


def exception_handlers() -> dict[type[Exception], Callable[..., Any]]:
    return {
        GatewayError: gateway_error,
        HTTPException: http_error,
        SQLAlchemyError: database_error,
        sqlite3.Error: database_error,
        Exception: server_error,
    }


def drain(app: Starlette, deps: Deps, stopping: asyncio.Event) -> None:
    """Shutdown has begun (app/server.py GracefulServer): waiters answer now, background loops end
    their rounds while the requests in flight finish, and SHUTDOWN_GRACE_S counts from here."""
    if not stopping.is_set():
        app.state.draining_since = time.monotonic()
    deps.draining = True
    deps.watch.drain()
    stopping.set()


async def watch_changes(deps: Deps) -> None:
    """Hear about changes made elsewhere, which is what lets the status cache serve."""
    if deps.engine.dialect.name == "postgresql":
        settings = deps.settings
        await listen_postgres(settings.database_url, deps.task_changed, deps.status_cache, settings.database_timeout_s)
    else:
        await watch_sqlite(deps.engine.url.database or "", deps.task_changed, deps.status_cache)


async def stop_tasks(tasks: list[asyncio.Task[None]], grace_s: float) -> None:
    """Give background loops grace_s to finish their round, then cancel them. A round cut
    short can leave its connection mid-transaction, and on SQLite that blocks every writer."""
    if tasks and grace_s > 0:
        await asyncio.wait(tasks, timeout=grace_s)
    for task in tasks:
        task.cancel()  # no effect on a task that has finished
    await asyncio.gather(*tasks, return_exceptions=True)


def error_response(
    request: Request,
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    """{"error": message}; on the OpenAI-compatible API's paths, OpenAI's error shape and status codes."""
    if request.scope["path"].startswith(openai_compat.OPENAI_PREFIX):
        status, body, extra = openai_compat.error_answer(status, message, param=param, code=code)
        return JSONResponse(body, status_code=status, headers={**(headers or {}), **extra})
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def gateway_error(request: Request, exc: Any) -> JSONResponse:
    param, code = getattr(exc, "param", None), getattr(exc, "code", None)
    return error_response(request, exc.status, exc.message, exc.headers, param=param, code=code)


async def http_error(request: Request, exc: Any) -> JSONResponse:
    return error_response(request, exc.status_code, exc.detail, exc.headers)


async def database_error(request: Request, exc: Exception) -> JSONResponse:
    """An outage the engine did not raise as DatabaseUnavailable itself (the status reader's own
    SQLite connection, SQLite's pool) is a 503 all the same. A value the database refused is the
    request's: every value is checked before it gets there, so reaching this is a missed check,
    logged as one, but still the client's 400 and never a 500. Any other database error is a bug."""
    if is_outage(exc):
        return await gateway_error(request, DatabaseUnavailable())
    if isinstance(exc, DataError | sqlite3.DataError):
        log.warning("a value reached the database unchecked in %s", _endpoint(request), exc_info=exc)
        return error_response(request, 400, "The request holds a value that cannot be stored")
    return await server_error(request, exc)


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error in %s %s", request.method, _endpoint(request), exc_info=exc)
    return error_response(request, 500, "Internal server error")


def _endpoint(request: Request) -> str:
    # The endpoint name, not the path: callback paths carry a secret.
    endpoint = request.scope.get("endpoint")
    return getattr(endpoint, "__name__", type(endpoint).__name__) if endpoint else "unknown endpoint"
