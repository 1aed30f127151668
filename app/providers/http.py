"""Calling a provider over HTTP: transport failures and error codes become ProviderErrors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from app.errors import ProviderError, ProviderRejected, ProviderTimeout, ProviderUnavailable
from app.inbound.untrusted import load_json
from app.observe.metrics import UPSTREAM_CALLS, labelled

MAX_RETRY_AFTER_S = 3600.0


# Failures after which the request surely never reached the provider.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


async def send(http: httpx.AsyncClient, label: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
    try:
        # httpx bounds each step of the exchange; this bounds the whole, however an answer trickles in.
        async with asyncio.timeout(deadline_s(http.timeout)):
            return await http.request(method, url, **kwargs)
    except TimeoutError:
        raise ProviderTimeout(f"{label} did not answer in time", maybe_created=True) from None
    except httpx.TimeoutException as exc:
        raise ProviderTimeout(f"{label} did not answer in time", maybe_created=not isinstance(exc, NOT_SENT)) from None
    except httpx.TransportError as exc:
        maybe_created = not isinstance(exc, NOT_SENT)
        raise ProviderUnavailable(f"{label} unreachable: {type(exc).__name__}", maybe_created=maybe_created) from None
    except (ValueError, TypeError, httpx.InvalidURL) as exc:  # e.g. a body that cannot be encoded: never will be
        raise ProviderRejected(f"request to {label} could not be built: {type(exc).__name__}") from None


@contextlib.asynccontextmanager
async def counted(provider: str, operation: str) -> AsyncIterator[None]:
    """Count the call in the block by its outcome: ok, timeout, transient or rejected."""
    try:
        yield
    except ProviderError as exc:
        labelled(UPSTREAM_CALLS, provider, operation, outcome(exc)).inc()
        raise
    labelled(UPSTREAM_CALLS, provider, operation, "ok").inc()


def outcome(exc: Exception) -> str:
    if isinstance(exc, ProviderTimeout):
        return "timeout"
    return "transient" if isinstance(exc, ProviderUnavailable) else "rejected"


def deadline_s(timeout: httpx.Timeout) -> float | None:
    """Time enough for every step of one exchange to take as long as it may."""
    steps = (timeout.connect, timeout.write, timeout.read, timeout.pool)
    return None if None in steps else sum(steps)  # type: ignore[arg-type]


def json_or_none(response: httpx.Response) -> Any:
    """The body as JSON, or None if it is not JSON (or is nested absurdly deep)."""
    try:
        return load_json(response.content)
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
