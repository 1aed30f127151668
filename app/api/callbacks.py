"""Where providers deliver results: POST /callbacks/{api}/{taskId}/{token}.

Callbacks arrive in bursts of thousands, so the endpoint is a bare ASGI app: no Request or
Response objects. The app also sends a callback straight to it, past the router and the
middleware stack (app/api/shortcuts.py); whichever way a callback comes, this endpoint answers it.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.api.body import receive_body
from app.deps import Deps
from app.errors import NotFound
from app.tasks.inbox import receive_callback

PATH = "/callbacks/{api}/{task_id}/{token}"
RECEIVED = b'{"code":200,"msg":"success"}'  # as JSONResponse would render it, rendered once


class ProviderCallback:
    """An ASGI app, so that Route leaves it one (a plain function would be wrapped in a Request)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        deps: Deps = scope["state"]["deps"]
        params = scope["path_params"]
        owner = deps.providers.for_callback_route(params["api"])
        if owner is None:
            raise NotFound("Not Found")
        headers = header_map(scope)
        raw = await receive_body(receive, headers.get("content-length", ""), deps.settings.max_body_bytes)
        verdict = await receive_callback(deps, owner, params["api"], params["task_id"], params["token"], headers, raw)
        if verdict.status != 200:
            return await JSONResponse({"error": verdict.message}, status_code=verdict.status)(scope, receive, send)
        answer = [(b"content-length", str(len(RECEIVED)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": answer})
        await send({"type": "http.response.body", "body": RECEIVED})


def header_map(scope: Scope) -> dict[str, str]:
    """The request's headers by (lowercase) name; of a repeated one, the first, as Starlette's Headers.get."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(scope["headers"])}


provider_callback = ProviderCallback()
routes = [Route(PATH, provider_callback, methods=["POST"])]
