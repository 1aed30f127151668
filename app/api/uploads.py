"""POST /api/uploads: a local image in, a URL usable in `imageInput` out."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.api.auth import owner_of
from app.api.body import parse_json, parsed_form, read_body
from app.deps import Deps
from app.errors import BadRequest
from app.uploads import MAX_UPLOAD_BYTES, decode_base64, upload_image

# Room for base64's third and the multipart or JSON framing around the image.
MAX_REQUEST_BYTES = MAX_UPLOAD_BYTES * 4 // 3 + 64 * 1024


async def upload(request: Request) -> JSONResponse:
    deps: Deps = request.state.deps
    await owner_of(request)
    raw = await read_body(request, MAX_REQUEST_BYTES)
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        content = await _multipart_file(request, raw)
    else:
        content = _json_file(raw)
    return JSONResponse(await upload_image(deps, content))


async def _multipart_file(request: Request, raw: bytes) -> bytes:
    async with parsed_form(request, raw, max_files=1, max_fields=10) as form:
        return await _only_file(form.getlist("file"))


async def _only_file(parts: list[UploadFile | str]) -> bytes:
    if not parts:
        raise BadRequest("multipart field 'file' is required")
    if len(parts) > 1:
        raise BadRequest("multipart field 'file' must appear once")
    if not isinstance(parts[0], UploadFile):
        raise BadRequest("multipart field 'file' must be a file (its part needs a filename), not a text value")
    return await parts[0].read()


def _json_file(raw: bytes) -> bytes:
    if not raw.lstrip().startswith(b"{"):
        raise BadRequest("Send multipart/form-data with a 'file' field, or JSON {\"data\": base64}")
    body = parse_json(raw, "Request body")
    if not isinstance(body, dict) or "data" not in body:
        raise BadRequest("JSON uploads need a 'data' field holding base64 or a data: URL")
    return decode_base64(body["data"])


routes = [Route("/api/uploads", upload, methods=["POST"])]
