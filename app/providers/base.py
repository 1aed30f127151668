"""What the rest of imagehook may ask of a provider: the calls every provider answers, the
capabilities only some have (asked with `isinstance(provider, Capability)`), and the owners of
callback routes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from app.providers.catalogue import Api, ModelSpec
from app.tasks.domain import Update


class Provider(Protocol):
    label: str  # how users are told which provider it is: "Kie.ai", "kvid.ai"

    async def create(self, spec: ModelSpec, body: dict[str, Any], callback_url: str | None) -> str: ...

    async def query(self, api: Api, upstream_id: str) -> Update: ...

    def rejection_status(self, code: int | None) -> int: ...


@runtime_checkable
class Uploads(Provider, Protocol):
    """Stores an uploaded file and answers where it can be downloaded (`downloadUrl`, maybe `expiresAt`)."""

    async def upload(self, content: bytes, file_name: str, mime_type: str) -> dict[str, Any]: ...


@runtime_checkable
class Balance(Provider, Protocol):
    """An account with a credit balance."""

    async def credits(self) -> float: ...


@runtime_checkable
class CreateWindow(Provider, Protocol):
    """A provider that accepts at most `count` new tasks per `window` and refuses the rest."""

    def create_limit(self) -> tuple[int, timedelta] | None: ...


class Refusal(Enum):
    """Why a callback is not read; the value ends its inbox verdict (`rejected:<value>`)."""

    SIGNATURE = "signature"
    TIMESTAMP = "timestamp"
    MALFORMED = "malformed"


class CallbackRefused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal


class CallbackRoutes(Protocol):
    """The callback URL routes (`/callbacks/<route>/...`) one provider owns, and how their bodies read.

    Known whether or not the provider's API key is configured: callbacks for tasks sent
    earlier still arrive.
    """

    routes: Collection[str]
    kept_headers: tuple[str, ...]  # request headers worth keeping in the inbox, lower-case

    def read(self, route: str, headers: Mapping[str, str], raw: bytes, now: datetime) -> Update:
        """The update a callback body reports, once its signature holds; raises CallbackRefused."""
        ...

    async def confirm(self, route: str, upstream_id: str) -> Update | None:
        """The provider's own record of the task, asked instead of trusting the body; None when
        the provider is not configured to be asked. Raises ProviderError when it cannot be now."""
        ...
