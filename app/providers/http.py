"""Calling a provider over HTTP: transport failures and error codes become ProviderErrors."""

from __future__ import annotations

from typing import Any

import httpx

from app.errors import ProviderRejected, ProviderUnavailable

MAX_RETRY_AFTER_S = 3600.0


async def send(http: httpx.AsyncClient, label: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
    try:
        return await http.request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise ProviderUnavailable(f"{label} did not answer in time") from None
    except httpx.TransportError as exc:
        raise ProviderUnavailable(f"{label} unreachable: {type(exc).__name__}") from None


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def refuse(
    code: int, msg: str, response: httpx.Response, transient: frozenset[int]
) -> ProviderUnavailable | ProviderRejected:
    """The error for a failed call: worth retrying (transient codes) or a definitive refusal."""
    if code in transient:
        return ProviderUnavailable(msg, code=code, retry_after=retry_after(response))
    return ProviderRejected(msg, code=code)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header, bounded to an hour; None when absent or not a number."""
    try:
        seconds = float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None
    return min(seconds, MAX_RETRY_AFTER_S) if seconds >= 0 else None
