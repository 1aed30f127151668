"""Upstream image providers: their HTTP clients, model table and wire formats."""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from app.providers.catalogue import Api, ModelSpec
from app.providers.kie.client import KieClient
from app.providers.kvid.client import KvidClient
from app.settings import Settings
from app.tasks.domain import Update

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
