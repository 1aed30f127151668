"""POST /api/uploads: a local image in, a URL usable in `imageInput` out."""

from __future__ import annotations

import json

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message

from app.api.body import read_body
from app.api.images import presented_key
from app.deps import Deps
from app.errors import BadRequest
from app.keys import authenticate
from app.uploads import MAX_UPLOAD_BYTES, decode_base64, upload_image

# Room for base64's third and the multipart or JSON framing around the image.
MAX_REQUEST_BYTES = MAX_UPLOAD_BYTES * 4 // 3 + 64 * 1024


async def upload(request: Request) -> JSONResponse:
    deps: Deps = request.state.deps
    await authenticate(deps, presented_key(request))
    raw = await read_body(request, MAX_REQUEST_BYTES)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        content = await _multipart_file(request, raw)
    else:
        content = _json_file(raw)
    return JSONResponse(await upload_image(deps, content))


async def _multipart_file(request: Request, raw: bytes) -> bytes:
    async def replay() -> Message:  # the body was already read under the size cap
        return {"type": "http.request", "body": raw, "more_body": False}

    try:
        async with Request(request.scope, replay).form(max_files=1, max_fields=10) as form:  # closes temp files
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise BadRequest("multipart field 'file' is required")
            return await file.read()
    except (MultiPartException, HTTPException) as exc:
        raise BadRequest(f"Malformed multipart body: {getattr(exc, 'detail', exc)}") from None


def _json_file(raw: bytes) -> bytes:
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("Send multipart/form-data with a 'file' field, or JSON {\"data\": base64}") from None
    if not isinstance(body, dict) or "data" not in body:
        raise BadRequest("JSON uploads need a 'data' field holding base64 or a data: URL")
    return decode_base64(body["data"])


routes = [Route("/api/uploads", upload, methods=["POST"])]
