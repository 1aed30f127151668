"""The reference: a bare Starlette app served exactly as the gateway is (app.cli.serve.run_server).

Its answers cost nothing beyond Starlette, uvicorn and JSON encoding, so gateway / bare says how
much of the framework's ceiling the gateway reaches on this machine. It also answers on the
gateway's own paths, so wrk sends both servers the very same requests.

    python -m bench.bare --port 8001
"""

from __future__ import annotations

import argparse

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.cli.serve import run_server

# The size and shape of a finished task's status body.
STATUS = {
    "taskId": "ih_Qm3xv8ZkR2pT7yLw0aBcDeFgHiJk",
    "state": "success",
    "imageUrl": "https://tempfile.aiquickdraw.com/workers/nano/image_1763776800000_ab12cd.png",
    "imageUrls": ["https://tempfile.aiquickdraw.com/workers/nano/image_1763776800000_ab12cd.png"],
    "expiresAt": "2026-11-23T01:00:45+00:00",
    "failMsg": None,
    "costTime": 45000,
    "model": "nano-banana-pro",
    "createdAt": "2026-11-22T01:00:00+00:00",
    "updatedAt": "2026-11-22T01:00:45+00:00",
}
RECEIVED = {"code": 200, "msg": "success"}


async def status(request: Request) -> JSONResponse:
    return JSONResponse(STATUS)


async def callback(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse(RECEIVED)


app = Starlette(
    routes=[
        Route("/status", status),
        Route("/api/images/status", status),
        Route("/callback", callback, methods=["POST"]),
        Route("/callbacks/{api}/{task_id}/{token}", callback, methods=["POST"]),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    run_server(app, args.host, args.port)


if __name__ == "__main__":
    main()
