"""GET /openapi.json: the published contract (app/contract/document.py), open to anyone."""

from __future__ import annotations

import functools

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.contract.document import build
from app.tasks.status import encode_json


@functools.cache
def document() -> bytes:
    return encode_json(build())


async def openapi(request: Request) -> Response:
    return Response(document(), media_type="application/json")


routes = [Route("/openapi.json", openapi, methods=["GET"])]
