"""Kie.ai over HTTP: the market jobs API and the dedicated 4o Image and Flux Kontext APIs.

The three differ only in paths and in how records and callbacks read; this client does the
HTTP, the envelope (`code` in the body, HTTP 200 even on errors) and the error classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from app.errors import ProviderUnavailable
from app.inbound.untrusted import is_upstream_id
from app.providers.catalogue import FLUX_KONTEXT, GPT4O, MARKET, Api, ModelSpec
from app.providers.http import counted, json_or_none, refuse, send
from app.providers.kie import dedicated as kie_dedicated
from app.providers.kie import market as kie_market
from app.tasks.domain import Update

LABEL = "Kie.ai"
PROVIDER = "kie"  # the metrics label
UPLOAD_PATH = "imagehook"
# Body codes that mean "try again later"; every other non-200 code is a definitive refusal.
# 505 (feature disabled) is a 5xx but will not heal by itself, so it is not here.
TRANSIENT_CODES = frozenset({408, 429, 455, 500, 501, 502, 503, 504, 550}) | frozenset(range(506, 600))


@dataclass(frozen=True)
class KieApi:
    create_path: str
    query_path: str
    read_record: Callable[[dict[str, Any]], Update]
    read_callback: Callable[[Any], tuple[str, Update]]


KIE_APIS = {
    MARKET.name: KieApi(
        "/api/v1/jobs/createTask", "/api/v1/jobs/recordInfo", kie_market.read_query_record, kie_market.read_callback
    ),
    GPT4O.name: KieApi(
        "/api/v1/gpt4o-image/generate",
        "/api/v1/gpt4o-image/record-info",
        kie_dedicated.read_4o_record,
        kie_dedicated.read_4o_callback,
    ),
    FLUX_KONTEXT.name: KieApi(
        "/api/v1/flux/kontext/generate",
        "/api/v1/flux/kontext/record-info",
        kie_dedicated.read_flux_record,
        kie_dedicated.read_flux_callback,
    ),
}
# Callback URL segment -> the API calling back, and how its callbacks read.
CALLBACK_APIS = {api.callback_route: api for api in (MARKET, GPT4O, FLUX_KONTEXT)}
CALLBACK_READERS = {route: KIE_APIS[api.name].read_callback for route, api in CALLBACK_APIS.items()}


class KieClient:
    label = LABEL

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        api_key: str,
        upload_base_url: str,
        *,
        create_limit: tuple[int, timedelta] | None = None,
    ) -> None:
        """`create_limit`: the account's create window (Kie allows 20 per 10 s), None to send unthrottled."""
        self._http = http
        self._base_url = base_url
        self._upload_base_url = upload_base_url
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._create_limit = create_limit

    async def create(self, spec: ModelSpec, body: dict[str, Any], callback_url: str | None) -> str:
        api = KIE_APIS[spec.api.name]
        data = await self._call(
            "create", "POST", self._base_url + api.create_path, json={**body, "callBackUrl": callback_url}
        )
        task_id = (data.get("taskId") or data.get("task_id")) if isinstance(data, dict) else None
        if not is_upstream_id(task_id):
            raise ProviderUnavailable("Kie.ai accepted the task but returned no usable taskId")
        return task_id

    async def query(self, api: Api, upstream_id: str) -> Update:
        data = await self._call(
            "query", "GET", self._base_url + KIE_APIS[api.name].query_path, params={"taskId": upstream_id}
        )
        if not isinstance(data, dict):
            raise ProviderUnavailable("Kie.ai returned a record without data")
        try:
            return KIE_APIS[api.name].read_record(data)
        except ValueError as exc:
            # An unreadable record may be a passing glitch; the task is simply asked again later.
            raise ProviderUnavailable(f"Kie.ai record unreadable: {exc}") from None

    async def upload(self, content: bytes, file_name: str, mime_type: str) -> dict[str, Any]:
        """Kie's file-stream upload (a separate host); the file is deleted upstream after 3 days."""
        url = self._upload_base_url + "/api/file-stream-upload"
        form = {"uploadPath": UPLOAD_PATH, "fileName": file_name}
        data = await self._call("upload", "POST", url, data=form, files={"file": (file_name, content, mime_type)})
        if not isinstance(data, dict) or not isinstance(data.get("downloadUrl"), str):
            raise ProviderUnavailable("Kie.ai stored the file but returned no downloadUrl")
        return data

    async def credits(self) -> float:
        """The account's remaining credits."""
        data = await self._call("balance", "GET", self._base_url + "/api/v1/chat/credit")
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise ProviderUnavailable("Kie.ai returned no credit balance")
        return float(data)

    def create_limit(self) -> tuple[int, timedelta] | None:
        """Kie refuses (does not queue) the creates beyond its window."""
        return self._create_limit

    def rejection_status(self, code: int | None) -> int:
        return 400  # the seed gateway's contract: every Kie.ai refusal is "400 Kie.ai error: ..."

    async def _call(self, operation: str, method: str, url: str, **kwargs: Any) -> Any:
        async with counted(PROVIDER, operation):
            response = await send(self._http, LABEL, method, url, headers=self._headers, **kwargs)
            body = json_or_none(response)
            code, msg = _code_and_msg(body, response.status_code)
            if code == 200:
                return body.get("data") if isinstance(body, dict) else None
            raise refuse(code, msg, response, TRANSIENT_CODES)


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
