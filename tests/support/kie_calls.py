"""Calls to the emulator's Kie endpoints that must succeed, returning the envelope's data."""

from __future__ import annotations

from typing import Any

import httpx

from tests.emulator.test_emulator import AUTH


async def kie_generate(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> str:
    response = await client.post(path, json=body, headers=AUTH)
    assert response.status_code == 200 and response.json()["code"] == 200, response.json()
    return response.json()["data"]["taskId"]


async def kie_record(client: httpx.AsyncClient, path: str, task_id: str) -> dict[str, Any]:
    response = await client.get(path, params={"taskId": task_id}, headers=AUTH)
    assert response.status_code == 200 and response.json()["code"] == 200, response.json()
    assert response.json()["msg"] == "success"
    return response.json()["data"]
