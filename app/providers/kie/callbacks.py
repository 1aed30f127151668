"""Kie.ai callbacks (market, 4o Image, Flux Kontext): their routes, signature and bodies.

Only the upstream task id is read from a body before its signature is checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from app.inbound.untrusted import scrubbed_json
from app.providers.base import CallbackRefused, Provider, Refusal
from app.providers.kie import signature
from app.providers.kie.client import CALLBACK_APIS, CALLBACK_READERS
from app.providers.kie.market import callback_task_id
from app.tasks.domain import Update

SIGNATURE_WINDOW_S = 300
TIMESTAMP = re.compile(r"[0-9]{1,12}")  # Unix seconds, ASCII digits; anything longer is no time at all
TIMESTAMP_KEY, SIGNATURE_KEY = signature.TIMESTAMP_HEADER.lower(), signature.SIGNATURE_HEADER.lower()


class KieCallbacks:
    routes = frozenset(CALLBACK_APIS)
    kept_headers = (TIMESTAMP_KEY, SIGNATURE_KEY)

    def __init__(self, hmac_key: str | None, client: Provider | None) -> None:
        """`hmac_key`: signatures are checked only with one. `client`: the configured Kie.ai, if any."""
        self._hmac_key = hmac_key
        self._client = client

    def read(self, route: str, headers: Mapping[str, str], raw: bytes, now: datetime) -> Update:
        try:
            # Cleaned, not refused: Kie would only send the same body again.
            body = scrubbed_json(raw)
        except ValueError:
            raise CallbackRefused(Refusal.MALFORMED) from None
        if self._hmac_key is not None:
            check_signature(self._hmac_key, body, headers, now.timestamp())
        try:
            return CALLBACK_READERS[route](body)[1]
        except ValueError:
            raise CallbackRefused(Refusal.MALFORMED) from None

    async def confirm(self, route: str, upstream_id: str) -> Update | None:
        """Kie's signature does not cover the body, so its recordInfo is asked instead."""
        if self._client is None:
            return None
        return await self._client.query(CALLBACK_APIS[route], upstream_id)


def check_signature(key: str, body: Any, headers: Mapping[str, str], now: float) -> None:
    """Raises CallbackRefused unless the headers sign the body's task id at a time near `now`."""
    timestamp = headers.get(TIMESTAMP_KEY, "")
    given = headers.get(SIGNATURE_KEY, "")
    try:
        upstream_id = callback_task_id(body)
    except ValueError:
        raise CallbackRefused(Refusal.SIGNATURE) from None
    if not signature.is_valid(key, upstream_id, timestamp, given):
        raise CallbackRefused(Refusal.SIGNATURE)
    if not TIMESTAMP.fullmatch(timestamp) or abs(now - int(timestamp)) > SIGNATURE_WINDOW_S:
        raise CallbackRefused(Refusal.TIMESTAMP)
