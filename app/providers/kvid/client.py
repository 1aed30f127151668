"""kvid.ai image API: generate-async, status and result, authenticated with an `api-key` header.

kvid.ai has no callbacks: its tasks are polled by the sweeper, one poll stream per task.
"""

from __future__ import annotations

from typing import Any

import httpx

from app.errors import ProviderRejected, ProviderUnavailable
from app.inbound.untrusted import finite_number, is_upstream_id
from app.providers.catalogue import Api, ModelSpec
from app.providers.http import counted, json_or_none, refuse, send
from app.tasks.domain import State, Update

LABEL = "kvid.ai"
PROVIDER = "kvid"  # the metrics label
TRANSIENT_CODES = frozenset({408, 429}) | frozenset(range(500, 600))
STATES = {
    "queued": State.PENDING,
    "pending": State.PENDING,
    "processing": State.PROCESSING,
    "running": State.PROCESSING,
}
# Refusals a client can act on keep their meaning; the rest are a plain 400.
CLIENT_STATUS = {402: 402, 422: 422}


class KvidClient:
    label = LABEL

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str) -> None:
        self._http = http
        self._base_url = base_url
        self._headers = {"api-key": api_key}

    async def create(self, spec: ModelSpec, body: dict[str, Any], callback_url: str | None) -> str:
        kind = spec.name.removeprefix("kvid/")  # text-to-image | image-to-image
        data = await self._call("create", "POST", f"/ai/generation/{kind}/generate-async", json=body)
        job_id = data.get("job_id") or data.get("jobId")
        if not is_upstream_id(job_id):
            raise ProviderUnavailable("kvid.ai accepted the job but returned no usable job_id")
        return job_id

    async def query(self, api: Api, upstream_id: str) -> Update:
        status = str(
            (await self._call("query", "GET", "/ai/generation/status", params={"jobId": upstream_id})).get("status")
        )
        if status in STATES:
            return Update(STATES[status])
        if status == "canceled":
            return Update(State.FAIL, fail_code="canceled", fail_msg="Canceled by kvid.ai")
        if status == "failed":
            return Update(State.FAIL, fail_msg=await self._failure_message(upstream_id))
        if status != "completed":
            raise ProviderUnavailable(f"kvid.ai reported unknown status {status!r}")
        return read_result(await self._result(upstream_id))

    async def _result(self, upstream_id: str) -> dict[str, Any]:
        return await self._call("query", "GET", "/ai/generation/result", params={"jobId": upstream_id})

    async def _failure_message(self, upstream_id: str) -> str:
        """The result of a failed job carries the reason (some versions answer it as an error)."""
        try:
            return str((await self._result(upstream_id)).get("error") or "Generation failed")
        except ProviderRejected as exc:
            return exc.message

    def rejection_status(self, code: int | None) -> int:
        return CLIENT_STATUS.get(code or 0, 400)

    async def _call(self, operation: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        async with counted(PROVIDER, operation):
            response = await send(self._http, LABEL, method, self._base_url + path, headers=self._headers, **kwargs)
            body = json_or_none(response)
            if response.status_code == 200 and isinstance(body, dict) and body.get("success") is not False:
                data = body.get("data")
                if isinstance(data, dict):
                    return data
                raise ProviderUnavailable("kvid.ai answered without data")
            code = response.status_code if response.status_code != 200 else 502
            raise refuse(code, _error_message(body, response.status_code), response, TRANSIENT_CODES)


def read_result(data: dict[str, Any]) -> Update:
    urls = data.get("result_urls") if isinstance(data.get("result_urls"), list) else [data.get("result_url")]
    found = tuple(url for url in urls if isinstance(url, str) and url)
    if not found:
        raise ProviderUnavailable("kvid.ai reported a completed job without a result_url")
    return Update(State.SUCCESS, image_urls=found, credits=finite_number(data.get("used_credit")))


def _error_message(body: Any, http_status: int) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or f"HTTP {http_status}")
    if isinstance(body, dict) and (body.get("message") or body.get("msg")):
        return str(body.get("message") or body.get("msg"))
    return f"HTTP {http_status}"
