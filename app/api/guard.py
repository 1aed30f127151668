"""Refusing, before any route runs, requests whose URL or headers hold a NUL character.

No route of this service takes one, PostgreSQL cannot store or even compare one, and a query
that fails on one must never be shared with another client's reads (see app/reads/loader.py).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from app.tasks.openai_compat import OPENAI_PREFIX, error_answer


class RefuseNul:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (where := nul_in(scope)):
            await _refuse(send, scope["path"], f"Request {where} contains a NUL character")
            return
        await self.app(scope, receive, send)


def nul_in(scope: Scope) -> str | None:
    if "\x00" in scope["path"]:
        return "path"
    query = scope["query_string"]
    if b"\x00" in query or b"%00" in query:
        return "query string"
    if any(b"\x00" in value for _, value in scope["headers"]):
        return "header"
    return None


async def _refuse(send: Send, path: str, message: str) -> None:
    content = error_answer(400, message)[1] if path.startswith(OPENAI_PREFIX) else {"error": message}
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})
