"""Kie.ai market jobs API: createTask, recordInfo, and reading callbacks. HTTP and wire format only."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import httpx

from app.domain import State, Update
from app.errors import ProviderRejected, ProviderUnavailable

# Body codes that mean "try again later"; every other non-200 code is a definitive refusal.
# 505 (feature disabled) is a 5xx but will not heal by itself, so it is not here.
TRANSIENT_CODES = frozenset({408, 429, 455, 500, 501, 502, 503, 504, 550})
MAX_RETRY_AFTER_S = 3600.0
KIE_STATES = {
    "waiting": State.PENDING,
    "queuing": State.PENDING,
    "generating": State.PROCESSING,
    "success": State.SUCCESS,
    "fail": State.FAIL,
}


class KieClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str) -> None:
        self._http = http
        self._base_url = base_url
        self._headers = {"Authorization": f"Bearer {api_key}"}

    async def create_task(self, payload: dict[str, Any], callback_url: str) -> str:
        body = {**payload, "callBackUrl": callback_url}
        data = await self._call("POST", "/api/v1/jobs/createTask", json=body)
        task_id = (data.get("taskId") or data.get("task_id")) if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise ProviderUnavailable("Kie.ai accepted the task but returned no taskId")
        return task_id

    async def record_info(self, upstream_id: str) -> Update:
        data = await self._call("GET", "/api/v1/jobs/recordInfo", params={"taskId": upstream_id})
        if not isinstance(data, dict):
            raise ProviderUnavailable("Kie.ai recordInfo returned no data")
        try:
            return read_record(data, cost_time_unit_ms=1)
        except ValueError as exc:
            # An unreadable record may be a passing glitch; the task is simply asked again later.
            raise ProviderUnavailable(f"Kie.ai recordInfo unreadable: {exc}") from None

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, self._base_url + path, headers=self._headers, **kwargs)
        except httpx.TimeoutException:
            raise ProviderUnavailable("Kie.ai did not answer in time") from None
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"Kie.ai unreachable: {type(exc).__name__}") from None
        body = _json_or_none(response)
        code, msg = _code_and_msg(body, response.status_code)
        if code == 200:
            return body.get("data") if isinstance(body, dict) else None
        if code in TRANSIENT_CODES or (code >= 500 and code != 505):
            raise ProviderUnavailable(msg, code=code, retry_after=_retry_after(response))
        raise ProviderRejected(msg, code=code)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _code_and_msg(body: Any, http_status: int) -> tuple[int, str]:
    """Kie answers HTTP 200 with an error code in the body, so the body code decides."""
    if http_status != 200 or not isinstance(body, dict):
        code = http_status if http_status != 200 else 502
        msg = (body.get("msg") or body.get("message")) if isinstance(body, dict) else None
        return code, str(msg or f"HTTP {http_status}")
    code = body.get("code", 200)
    try:
        code = int(code)
    except (TypeError, ValueError):
        code = 502
    return code, str(body.get("msg") or body.get("message") or f"code {code}")


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header, bounded to an hour; None when absent or not a number."""
    try:
        seconds = float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None
    return min(seconds, MAX_RETRY_AFTER_S) if seconds >= 0 else None


def read_record(data: dict[str, Any], *, cost_time_unit_ms: int) -> Update:
    """A recordInfo `data` object or a callback's `data`, in imagehook's terms.

    costTime is milliseconds in recordInfo but seconds in callbacks: the caller says which.
    """
    state = KIE_STATES.get(str(data.get("state", "")).lower())
    if state is None:
        raise ValueError(f"unknown Kie state {data.get('state')!r}")
    cost = data.get("costTime")
    cost_ms = round(cost * cost_time_unit_ms) if isinstance(cost, int | float) and cost >= 0 else None
    if state is State.SUCCESS:
        return Update(state, image_urls=_result_urls(data.get("resultJson")), cost_time_ms=cost_ms)
    if state is State.FAIL:
        fail_code = str(data.get("failCode") or "") or None
        fail_msg = str(data.get("failMsg") or "Generation failed")
        return Update(state, fail_code=fail_code, fail_msg=fail_msg, cost_time_ms=cost_ms)
    return Update(state)


def read_callback(body: Any) -> tuple[str, Update]:
    """A market callback body -> (Kie task id, update). Raises ValueError on a malformed body."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise ValueError("callback body has no data object")
    data = body["data"]
    upstream_id = callback_task_id(body)
    if not data.get("state"):
        # Some senders omit state; the envelope code still tells success from failure.
        data = {**data, "state": "success" if body.get("code") == 200 else "fail"}
        data.setdefault("failMsg", body.get("msg") or body.get("message"))
    return upstream_id, replace(read_record(data, cost_time_unit_ms=1000), upstream_id=upstream_id)


def callback_task_id(body: Any) -> str:
    """Kie's docs name the id three ways (data.task_id, data.taskId, taskId): take the first present."""
    data = body.get("data") if isinstance(body, dict) else None
    for candidate in (
        data.get("task_id") if isinstance(data, dict) else None,
        data.get("taskId") if isinstance(data, dict) else None,
        body.get("taskId") if isinstance(body, dict) else None,
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    raise ValueError("callback body carries no task id")


def _result_urls(result_json: Any) -> tuple[str, ...]:
    if isinstance(result_json, str):
        try:
            result_json = json.loads(result_json) if result_json else {}
        except ValueError:
            raise ValueError("resultJson is not valid JSON") from None
    urls = result_json.get("resultUrls") if isinstance(result_json, dict) else None
    if not isinstance(urls, list):
        return ()
    return tuple(url for url in urls if isinstance(url, str))
