"""Where providers deliver results: POST /callbacks/{api}/{taskId}/{token}.

Callbacks arrive in bursts of thousands, so the route also has a way in past the router and the
middleware stack (app/api/shortcuts.py); whichever way a callback comes, this endpoint answers it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.api.body import read_body
from app.deps import Deps
from app.errors import NotFound
from app.tasks.inbox import receive_callback

RECEIVED = b'{"code":200,"msg":"success"}'  # as JSONResponse would render it, rendered once


async def provider_callback(request: Request) -> Response:
    deps: Deps = request.state.deps
    route = request.path_params["api"]
    owner = deps.providers.for_callback_route(route)
    if owner is None:
        raise NotFound("Not Found")
    raw = await read_body(request, deps.settings.max_body_bytes)
    task_id, token = request.path_params["task_id"], request.path_params["token"]
    verdict = await receive_callback(deps, owner, route, task_id, token, request.headers, raw)
    if verdict.status != 200:
        return JSONResponse({"error": verdict.message}, status_code=verdict.status)
    return Response(RECEIVED, media_type="application/json")


routes = [Route("/callbacks/{api}/{task_id}/{token}", provider_callback, methods=["POST"])]
