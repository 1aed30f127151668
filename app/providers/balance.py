"""A provider account's remaining credits, for operators: fetched on demand, cached for probes."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.errors import ProviderError
from app.providers.base import Balance

FRESH_FOR = timedelta(minutes=5)


@dataclass
class CachedBalance:
    """What /readyz shows: never an upstream call on the probe's path, only a background refresh."""

    value: float | None = None
    checked_at: datetime | None = None
    error: str | None = None
    _refresh: asyncio.Task[None] | None = field(default=None, repr=False)

    def report(self, client: Balance | None, now: datetime) -> dict[str, Any]:
        stale = self.checked_at is None or now - self.checked_at > FRESH_FOR
        if client is not None and stale and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(self._fetch(client, now))
        return {
            "credits": self.value,
            "checkedAt": self.checked_at.isoformat() if self.checked_at else None,
            "error": self.error,
        }

    async def _fetch(self, client: Balance, now: datetime) -> None:
        try:
            self.value, self.error = await client.credits(), None
        except ProviderError as exc:
            self.error = exc.message
        self.checked_at = now

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
