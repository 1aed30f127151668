"""The providers a deployment has: asked by name, by capability, or by a callback route they own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TypeVar

import httpx

from app.errors import NotConfigured
from app.providers.base import CallbackRoutes, Provider
from app.providers.kie.callbacks import KieCallbacks
from app.providers.kie.client import KieClient
from app.providers.kvid.client import KvidClient
from app.settings import Settings

# Every provider imagehook speaks to, configured or not, in the order a capability is looked for.
CLASSES: dict[str, type[Provider]] = {"kie": KieClient, "kvid": KvidClient}
LABELS = {name: cls.label for name, cls in CLASSES.items()}

Capability = TypeVar("Capability", bound=Provider)


class Providers:
    def __init__(self, configured: Mapping[str, Provider], callbacks: Iterable[CallbackRoutes] = ()) -> None:
        """`configured`: the providers whose API keys are set, by name; `callbacks`: every callback owner."""
        self._configured = dict(configured)
        self._callbacks = {route: owner for owner in callbacks for route in owner.routes}

    def get(self, name: str) -> Provider | None:
        return self._configured.get(name)

    def named(self, name: str) -> Provider:
        """The configured provider `name`; NotConfigured if its API key is not set."""
        provider = self.get(name)
        if provider is None:
            raise NotConfigured(f"{LABELS[name]} API key not configured")
        return provider

    def find(self, capability: type[Capability]) -> Capability | None:
        """The first configured provider with `capability`, or None."""
        return next(iter(self.having(capability).values()), None)

    def having(self, capability: type[Capability]) -> dict[str, Capability]:
        """The configured providers with `capability`, by name."""
        return {name: p for name, p in self._configured.items() if isinstance(p, capability)}

    def require(self, capability: type[Capability]) -> Capability:
        """The first configured provider with `capability`; NotConfigured naming the providers that have it."""
        provider = self.find(capability)
        if provider is None:
            # A provider class holds its label and methods itself, so it passes the check its instances do.
            labels = [cls.label for cls in CLASSES.values() if isinstance(cls, capability)]
            raise NotConfigured(f"{' or '.join(labels)} API key not configured")
        return provider

    def for_callback_route(self, route: str) -> CallbackRoutes | None:
        """Who reads callbacks sent to `/callbacks/<route>/...`; None for a route no provider owns."""
        return self._callbacks.get(route)


def build_providers(settings: Settings, http: httpx.AsyncClient) -> Providers:
    """The providers whose API keys are configured (a model of any other answers 500), and the
    owners of every callback route."""
    configured: dict[str, Provider] = {}
    if settings.kieai_api_key:
        configured["kie"] = KieClient(
            http,
            settings.kieai_base_url,
            settings.kieai_api_key,
            settings.kieai_upload_base_url,
            create_limit=kie_create_limit(settings),
        )
    if settings.kvid_api_key:
        configured["kvid"] = KvidClient(http, settings.kvid_base_url, settings.kvid_api_key)
    return Providers(configured, [KieCallbacks(settings.kieai_webhook_hmac_key, configured.get("kie"))])


def kie_create_limit(settings: Settings) -> tuple[int, timedelta] | None:
    """KIE_CREATE_LIMIT new tasks per KIE_CREATE_WINDOW_S; a limit of 0 turns the window off."""
    if settings.kie_create_limit <= 0:
        return None
    return settings.kie_create_limit, timedelta(seconds=settings.kie_create_window_s)
