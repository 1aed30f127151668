"""Where providers deliver results: POST /callbacks/kie/{taskId}/{token}."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.api.body import read_body
from app.callbacks import receive_kie_callback
from app.deps import Deps


async def kie_callback(request: Request) -> JSONResponse:
    deps: Deps = request.state.deps
    raw = await read_body(request, deps.settings.max_body_bytes)
    task_id, token = request.path_params["task_id"], request.path_params["token"]
    verdict = await receive_kie_callback(deps, task_id, token, request.headers, raw)
    if verdict.status != 200:
        return JSONResponse({"error": verdict.message}, status_code=verdict.status)
    return JSONResponse({"code": 200, "msg": "success"})


routes = [Route("/callbacks/kie/{task_id}/{token}", kie_callback, methods=["POST"])]
