"""The client API, compatible with the seed gateway: generate and status."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app import services
from app.api.body import read_json
from app.deps import Deps
from app.errors import BadRequest
from app.keys import authenticate
from app.validation import parse_generate


def presented_key(request: Request) -> str | None:
    """`Authorization: Bearer <key>`, or the seed's `auth_token` cookie."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get("auth_token")


async def generate(request: Request) -> JSONResponse:
    deps: Deps = request.state.deps
    owner = await authenticate(deps, presented_key(request))
    submission = parse_generate(await read_json(request, deps.settings.max_body_bytes))
    task_id = await services.submit_task(deps, api_key_id=owner, submission=submission)
    return JSONResponse({"taskId": task_id})


async def status(request: Request) -> JSONResponse:
    deps: Deps = request.state.deps
    owner = await authenticate(deps, presented_key(request))
    task_id = request.query_params.get("taskId", "").strip()
    if not task_id:
        raise BadRequest("taskId is required")
    return JSONResponse(await services.get_status(deps, api_key_id=owner, task_id=task_id))


routes = [
    Route("/api/images/generate", generate, methods=["POST"]),
    Route("/api/images/status", status, methods=["GET"]),
]
