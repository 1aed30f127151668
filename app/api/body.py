"""Reading request bodies with a size cap, before anything else looks at them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import Message, Receive

from app.errors import BadRequest, PayloadTooLarge
from app.inbound.untrusted import UntrustedInputError, load_json, unstorable


async def read_body(request: Request, limit: int) -> bytes:
    return await receive_body(request.receive, request.headers.get("content-length", ""), limit)


async def receive_body(receive: Receive, declared: str, limit: int) -> bytes:
    """The body ASGI's `receive` brings, refused unread if its declared Content-Length is over `limit`."""
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise PayloadTooLarge(f"Request body too large (limit {limit} bytes)")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # gone, or cut off for sending too slowly: nobody reads the answer
            raise BadRequest("Request body was not received completely")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body too large (limit {limit} bytes)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON whose every string can be stored and sent on; BadRequest says what is wrong."""
    return parse_json(await read_body(request, limit), "Request body")


def parse_json(raw: bytes | str, what: str) -> Any:
    try:
        value = load_json(raw)
    except UntrustedInputError as exc:
        raise BadRequest(f"{what} is not acceptable: {exc}") from None
    except ValueError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    if problem := unstorable(value):
        raise BadRequest(f"{what}: {problem}")
    return value


@contextlib.asynccontextmanager
async def parsed_form(request: Request, raw: bytes, *, max_files: int, max_fields: int) -> AsyncIterator[FormData]:
    """The multipart body `raw` (already read under a size cap) as form data; its temp files close on exit."""

    async def replay() -> Message:
        return {"type": "http.request", "body": raw, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=max_files, max_fields=max_fields)
    except (MultiPartException, HTTPException) as exc:
        raise BadRequest(f"Malformed multipart body: {getattr(exc, 'detail', exc)}") from None
    try:
        yield form
    finally:
        await form.close()
