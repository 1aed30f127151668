"""Upstream image providers: their HTTP clients, model table and wire formats."""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from app.domain import Update
from app.providers.kie import KieClient
from app.providers.kvid import KvidClient
from app.providers.models import Api, ModelSpec
from app.settings import Settings

LABELS = {"kie": "Kie.ai", "kvid": "kvid.ai"}


class Provider(Protocol):
    label: str

    async def create(self, spec: ModelSpec, body: dict[str, Any], callback_url: str | None) -> str: ...

    async def query(self, api: Api, upstream_id: str) -> Update: ...

    def rejection_status(self, code: int | None) -> int: ...


def build_providers(settings: Settings, http: httpx.AsyncClient) -> dict[str, Provider]:
    """The providers whose API keys are configured; a model of any other answers 500."""
    providers: dict[str, Provider] = {}
    if settings.kieai_api_key:
        providers["kie"] = KieClient(
            http, settings.kieai_base_url, settings.kieai_api_key, settings.kieai_upload_base_url
        )
    if settings.kvid_api_key:
        providers["kvid"] = KvidClient(http, settings.kvid_base_url, settings.kvid_api_key)
    return providers
