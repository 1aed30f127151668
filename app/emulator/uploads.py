"""Kie's file upload API (facts section 6): stream (multipart) and base64 uploads, served back from memory.

Uploads are not jobs: no timeline, no faults (uploads are free and synchronous on the real API), but the same
Bearer key. Their envelope adds `success` to Kie's code/msg.
"""

import base64
import binascii
import mimetypes
import os
import secrets
from typing import Any
from urllib.parse import quote

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from app.emulator.faults import create_error_message
from app.emulator.store import Upload, store_of
from app.emulator.wire import KIE, iso8601

GENERIC_MIME = "application/octet-stream"


class Refused(Exception):
    """An upload answered with {"success": false, "code": 400, ...}."""


def _answer(code: int, msg: str, data: dict[str, Any] | None = None) -> JSONResponse:
    # Like the rest of Kie: HTTP 200, the outcome in the body.
    body: dict[str, Any] = {"success": code == 200, "code": code, "msg": msg}
    if data is not None:
        body["data"] = data
    return JSONResponse(body)


def _folder(upload_path: Any) -> str:
    """uploadPath as clean segments ("images/user-1"); refuses what would escape or be empty."""
    if not isinstance(upload_path, str) or not upload_path.strip("/ "):
        raise Refused("uploadPath is required")
    segments = [segment for segment in upload_path.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        raise Refused("uploadPath must not contain . or .. segments")
    return "/".join(segments)


def _file_name(given: Any, original: str | None, mime_type: str | None) -> str:
    """The given fileName, else a random name keeping the original's extension (or one implied by the type)."""
    if given not in (None, ""):
        if not isinstance(given, str) or "/" in given or given in (".", ".."):
            raise Refused("fileName must be a plain file name")
        return given
    extension = os.path.splitext(original or "")[1] or mimetypes.guess_extension(mime_type or "") or ""
    return secrets.token_hex(8) + extension


def _save(
    request: Request, content: bytes, fields: dict[str, Any], original: str | None, declared: str | None
) -> Response:
    store = store_of(request)
    folder = _folder(fields.get("uploadPath"))
    file_name = _file_name(fields.get("fileName"), original, declared)
    if declared in (None, "", GENERIC_MIME):
        declared = mimetypes.guess_type(file_name)[0]
    mime_type = declared or GENERIC_MIME
    file_path = f"{folder}/{file_name}"
    store.uploads[file_path] = Upload(content, mime_type)  # a reused name overwrites, as on Kie
    data = {
        "fileName": file_name,
        "filePath": file_path,
        "downloadUrl": f"{request.base_url}files/uploads/{quote(file_path)}",
        "fileSize": len(content),
        "mimeType": mime_type,
        "uploadedAt": iso8601(store.clock()),
    }
    return _answer(200, "File uploaded successfully", data)


async def _from_stream(request: Request) -> Response:
    try:
        async with request.form() as form:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise Refused("file is required (multipart field 'file')")
            content = await file.read()
            return _save(request, content, dict(form), file.filename, file.content_type)
    except (HTTPException, MultiPartException) as exc:
        raise Refused(f"invalid multipart body: {exc}") from exc


def _decode(data: Any) -> tuple[bytes, str | None]:
    """base64Data, raw or as a data: URL (whose media type is returned too)."""
    if not isinstance(data, str) or not data:
        raise Refused("base64Data is required")
    declared = None
    if data.startswith("data:"):
        header, _, data = data.partition(",")
        declared = header[len("data:") :].split(";")[0] or None
    try:
        return base64.b64decode("".join(data.split()), validate=True), declared
    except (binascii.Error, ValueError) as exc:
        raise Refused("base64Data is not valid base64") from exc


async def _from_base64(request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError as exc:
        raise Refused("Invalid JSON body") from exc
    if not isinstance(body, dict):
        raise Refused("request body must be a JSON object")
    content, declared = _decode(body.get("base64Data"))
    return _save(request, content, body, None, declared)


def _upload_endpoint(receive):
    """Counting, auth and refusals shared by both upload styles; `receive` reads and saves the file."""

    async def endpoint(request: Request) -> Response:
        store = store_of(request)
        store.calls["upload"] += 1
        if not KIE.authorized(request, store):
            return _answer(401, create_error_message(401))
        try:
            return await receive(request)
        except Refused as refusal:
            return _answer(400, str(refusal))

    return endpoint


async def uploaded_file(request: Request) -> Response:
    upload = store_of(request).uploads.get(request.path_params["path"])
    if upload is None:
        return PlainTextResponse("not found", status_code=404)
    return Response(upload.content, media_type=upload.mime_type)


ROUTES = [
    Route("/api/file-stream-upload", _upload_endpoint(_from_stream), methods=["POST"]),
    Route("/api/file-base64-upload", _upload_endpoint(_from_base64), methods=["POST"]),
    # Before /files/{task_id}/{name} in the route list, so "uploads" is never taken for a task id.
    Route("/files/uploads/{path:path}", uploaded_file, methods=["GET"]),
]
