"""The end-to-end tier's pieces: the settings and environment of a gateway under test, a control client
of the Kie.ai emulator, status polling and signed Kie callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from app.emulator.wiring import gateway_environment
from app.providers.kie import signature as kie_signature
from app.settings import Settings
from tests.support.servers import ThreadServer

EMULATOR_API_KEY = "test-kie-key"
KVID_API_KEY = "test-kvid-key"
HMAC_KEY = "test-webhook-hmac-key"
SECRET = "test-secret-0123456789abcdef"


StartServer = Callable[[ThreadServer], Awaitable[ThreadServer]]


@dataclass
class Emulator:
    http: httpx.AsyncClient

    async def set_faults(self, **faults: Any) -> None:
        response = await self.http.post("/emulator/faults", json=faults)
        response.raise_for_status()

    async def calls(self) -> dict[str, Any]:
        return (await self.http.get("/emulator/calls")).json()

    async def tasks(self) -> list[dict[str, Any]]:
        return (await self.http.get("/emulator/tasks")).json()

    async def redeliver(self, upstream_id: str) -> httpx.Response:
        return await self.http.post(f"/emulator/tasks/{upstream_id}/callback")


def gateway_settings(database_url: str, kie_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        database_url=database_url,
        public_base_url="http://127.0.0.1:0",
        kieai_api_key=EMULATOR_API_KEY,
        kieai_base_url=kie_url,
        kieai_upload_base_url=kie_url,
        kieai_webhook_hmac_key=HMAC_KEY,
        kvid_api_key=KVID_API_KEY,
        kvid_base_url=kie_url,
        poll_interval_s=0.2,
        secret=SECRET,
        sweep_interval_s=0.1,
        stale_after_s=1.0,
        task_timeout_s=60.0,
        upstream_timeout_s=5.0,
        storage_dir=tempfile.mkdtemp(prefix="imagehook-files-"),  # fresh per gateway: tests inspect it
        fetch_allowed_hosts=("127.0.0.1",),
    )
    return Settings(**(values | overrides))


def gateway_env(database_url: str, kie_url: str, port: int, **extra: str) -> dict[str, str]:
    """The environment of a gateway run as its own process (`python -m app serve`)."""
    emulator = gateway_environment(kie_url, api_key=EMULATOR_API_KEY, hmac_key=HMAC_KEY, kvid_key=KVID_API_KEY)
    own = {
        "DATABASE_URL": database_url,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "IMAGEHOOK_SECRET": SECRET,
        "SWEEP_INTERVAL_S": "0.2",
        "STALE_AFTER_S": "1",
    }
    return emulator | own | extra


@dataclass
class Gateway:
    url: str
    settings: Settings


StartGateway = Callable[..., Awaitable[Gateway]]

ClientOf = Callable[[Gateway], contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


async def wait_for_state(
    http: httpx.AsyncClient, task_id: str, states: set[str], timeout: float = 10.0
) -> dict[str, Any]:
    """Read status (from imagehook's own database) until the task is in one of `states`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = (await http.get("/api/images/status", params={"taskId": task_id})).json()
        if body.get("state") in states or asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(0.05)


def market_callback(upstream_id: str, state: str, **data: Any) -> dict[str, Any]:
    """A callback body in Kie's market format (costTime in seconds)."""
    body = {"taskId": upstream_id, "model": "nano-banana-pro", "state": state, "param": "{}", "costTime": 3}
    if state == "success":
        body["resultJson"] = json.dumps({"resultUrls": ["https://example.com/a.png"]})
    body |= data
    return {"code": 200 if state == "success" else 501, "msg": "Playground task", "data": body}


async def post_signed(
    url: str, body: dict[str, Any], *, key: str = HMAC_KEY, timestamp: int | None = None
) -> httpx.Response:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = kie_signature.sign(key, body["data"]["taskId"], ts)
    headers = {kie_signature.TIMESTAMP_HEADER: ts, kie_signature.SIGNATURE_HEADER: signature}
    async with httpx.AsyncClient() as http:
        return await http.post(url, json=body, headers=headers)


BROWSER_LINKS = ("signedImageUrls", "signedUrlsExpireAt")


def without_browser_links(status: dict[str, Any]) -> dict[str, Any]:
    """A status as a webhook carries it: less the signed links, which may expire before a retry is sent."""
    return {key: value for key, value in status.items() if key not in BROWSER_LINKS}
