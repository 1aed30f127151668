"""Python client for imagehook: submit, long-poll, cancel, download, and verify the webhooks it sends.

`Imagehook` (sync) and `AsyncImagehook` differ only in how they send: both build every request with
the same `_Base` method, read every answer with the same parser, and wait on the same `Waiter`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import httpx

TERMINAL_STATES = frozenset({"success", "fail"})
MAX_WAIT_S = 60  # the server holds a request at most this long
MIN_POLL_INTERVAL_S = 1.0  # floor between polls if a server answers long-polls at once (see Waiter.pause)
# Connection failures and timeouts only: the request may not have arrived, or its answer was lost.
RETRYABLE = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

Status = dict[str, Any]
OnUpdate = Callable[[Status], None]


class ImagehookError(Exception):
    """A non-2xx answer: `.status` is the HTTP status, `.message` the server's "error" text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.message = message


class WaitTimeoutError(TimeoutError):
    """wait() gave up; `.last_status` is the task's last known (non-terminal) status."""

    def __init__(self, last_status: Status, timeout: float) -> None:
        super().__init__(f"task {last_status.get('taskId')} still {last_status.get('state')} after {timeout:g}s")
        self.last_status = last_status


class WebhookVerificationError(ValueError):
    """A webhook whose headers, signature or timestamp do not check out (not an HTTP error: nothing was sent)."""


def parse_json(response: httpx.Response) -> dict[str, Any]:
    _raise_for_error(response)
    return response.json()


def parse_cancel(response: httpx.Response) -> dict[str, Any]:
    """A cancel's answer: the task's status, canceled, or as it finished first (409, with the status)."""
    if response.status_code == 409:
        body = response.json()
        if "taskId" in body:
            return {name: value for name, value in body.items() if name != "error"}
    return parse_json(response)


def parse_bytes(response: httpx.Response) -> bytes:
    _raise_for_error(response)
    return response.content


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        message = str(response.json()["error"])
    except (ValueError, KeyError, TypeError):  # not imagehook's JSON, e.g. a proxy's HTML page
        message = response.text.strip() or response.reason_phrase
    raise ImagehookError(response.status_code, message)


def _seconds(wait: float) -> int:
    return max(0, math.ceil(wait))


def _duration(cancel_after: float | str) -> str:
    """Cancel-After's value: a number of seconds as it is, or a duration the server reads (`5m`, `1h30m`)."""
    return f"{cancel_after:g}" if isinstance(cancel_after, int | float) else cancel_after


class Waiter:
    """The schedule of wait(), shared by both clients: what to ask for next, when to report, when to stop."""

    def __init__(self, timeout: float, on_update: OnUpdate | None) -> None:
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._on_update = on_update
        self._state: str | None = None
        self._polled_at = 0.0
        self._reads = 0

    def next_wait(self) -> int | None:
        """None for the first read: immediate, so on_update hears the starting state without a long-poll's delay."""
        self._polled_at = time.monotonic()
        self._reads += 1
        # At least 1 s: after a pause the deadline may just have passed; the next answer then ends the wait.
        return None if self._reads == 1 else max(1, min(MAX_WAIT_S, math.ceil(self._deadline - self._polled_at)))

    def finished(self, status: Status) -> bool:
        """True when `status` is terminal; raises WaitTimeoutError when it is not and time is up."""
        if status["state"] != self._state:
            self._state = status["state"]
            if self._on_update is not None:
                self._on_update(status)
        if status["state"] in TERMINAL_STATES:
            return True
        if time.monotonic() >= self._deadline:
            raise WaitTimeoutError(status, self._timeout)
        return False

    def pause(self) -> float:
        """Seconds to sleep before the next poll: none after the first, immediate read."""
        if self._reads == 1:
            return 0.0
        # A long-poll ends early only when the task is terminal; a non-terminal answer that came back sooner
        # means a server that does not hold requests, which must not be polled in a tight loop.
        return max(0.0, MIN_POLL_INTERVAL_S - (time.monotonic() - self._polled_at))


class _Base:
    """What both clients share: settings, and the one builder of each request (as httpx.request arguments)."""

    def __init__(self, base_url: str, api_key: str, timeout: float, http: Any, make_http: Callable[[], Any]) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._owns_http = http is None
        self._http = make_http() if http is None else http

    def _generate_request(
        self,
        prompt: str,
        model: str | None,
        key: str | None,
        wait: float | None,
        cancel_after: float | str | None,
        fields: Mapping[str, Any],
    ) -> dict[str, Any]:
        # A key even when the caller gives none, so the automatic retry can never create a second task.
        headers = self._auth() | {"Idempotency-Key": key or str(uuid.uuid4())}
        if wait is not None:
            headers["Prefer"] = f"wait={_seconds(wait)}"
        if cancel_after is not None:
            headers["Cancel-After"] = _duration(cancel_after)
        given = {"prompt": prompt, "model": model, **fields}
        body = {name: value for name, value in given.items() if value is not None}
        return self._request("POST", f"{self.base_url}/api/images/generate", wait, headers=headers, json=body)

    def _status_request(self, task_id: str, wait: float | None) -> dict[str, Any]:
        params: dict[str, Any] = {"taskId": task_id}
        if wait is not None:
            params["wait"] = _seconds(wait)
        return self._request("GET", f"{self.base_url}/api/images/status", wait, headers=self._auth(), params=params)

    def _cancel_request(self, task_id: str) -> dict[str, Any]:
        url = f"{self.base_url}/api/images/tasks/{task_id}/cancel"
        return self._request("POST", url, None, headers=self._auth())

    def _download_request(self, url: str) -> dict[str, Any]:
        # The key goes to imagehook's own copies (owner only), never to a provider's storage.
        headers = self._auth() if url.startswith(f"{self.base_url}/") else {}
        return self._request("GET", url, None, headers=headers)

    def _request(self, method: str, url: str, hold_s: float | None, **kwargs: Any) -> dict[str, Any]:
        # A long-poll's read timeout must outlast the server's hold, or every long-poll would time out.
        timeout = httpx.Timeout(self.timeout, read=self.timeout + (hold_s or 0))
        return dict(method=method, url=url, timeout=timeout, follow_redirects=True, **kwargs)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


class Imagehook(_Base):
    """Synchronous client; a context manager. `timeout` is per request, on top of any server-side wait.

    Pass `http` to share a client (it is then not closed here). Every request is retried once on a
    connection error or timeout: all of them are GETs, carry an Idempotency-Key, or are cancels (a
    second cancel answers as the first did).
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0, http: httpx.Client | None = None):
        super().__init__(base_url, api_key, timeout, http, httpx.Client)

    def __enter__(self) -> Imagehook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def generate(
        self,
        prompt: str,
        *,
        model: str | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
        cancel_after: float | str | None = None,
        **fields: Any,
    ) -> Status:
        """Submit a task: {"taskId"}, or with `wait` (≤ 60 s) its status once terminal or when the wait ends.

        `cancel_after` (seconds, or a duration such as "5m" or "1h30m") cancels the task if it has not
        finished that long after submission (the `Cancel-After` header). `fields` are the other request
        fields by their API names (aspectRatio=, imageInput=[...], ...).
        """
        request = self._generate_request(prompt, model, idempotency_key, wait, cancel_after, fields)
        return parse_json(self._send(request))

    def status(self, task_id: str, *, wait: float | None = None) -> Status:
        """The task's status; with `wait` (≤ 60 s) the server answers as soon as it is terminal."""
        return parse_json(self._send(self._status_request(task_id, wait)))

    def wait(self, task_id: str, *, timeout: float = 600, on_update: OnUpdate | None = None) -> Status:
        """Long-poll until the task is terminal and return its status; on_update(status) on each state change."""
        waiter = Waiter(timeout, on_update)
        while True:
            status = self.status(task_id, wait=waiter.next_wait())
            if waiter.finished(status):
                return status
            time.sleep(waiter.pause())

    def cancel(self, task_id: str) -> Status:
        """Cancel the task; its status: `fail` with failCode "canceled", or as it finished if it finished first."""
        return parse_cancel(self._send(self._cancel_request(task_id)))

    def download(self, url: str) -> bytes:
        return parse_bytes(self._send(self._download_request(url)))

    def _send(self, request: dict[str, Any]) -> httpx.Response:
        try:
            return self._http.request(**request)
        except RETRYABLE:
            return self._http.request(**request)


class AsyncImagehook(_Base):
    """Asynchronous client: the same methods as Imagehook, awaited; an async context manager."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0, http: httpx.AsyncClient | None = None):
        super().__init__(base_url, api_key, timeout, http, httpx.AsyncClient)

    async def __aenter__(self) -> AsyncImagehook:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def generate(
        self,
        prompt: str,
        *,
        model: str | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
        cancel_after: float | str | None = None,
        **fields: Any,
    ) -> Status:
        request = self._generate_request(prompt, model, idempotency_key, wait, cancel_after, fields)
        return parse_json(await self._send(request))

    async def status(self, task_id: str, *, wait: float | None = None) -> Status:
        return parse_json(await self._send(self._status_request(task_id, wait)))

    async def wait(self, task_id: str, *, timeout: float = 600, on_update: OnUpdate | None = None) -> Status:
        waiter = Waiter(timeout, on_update)
        while True:
            status = await self.status(task_id, wait=waiter.next_wait())
            if waiter.finished(status):
                return status
            await asyncio.sleep(waiter.pause())

    async def cancel(self, task_id: str) -> Status:
        return parse_cancel(await self._send(self._cancel_request(task_id)))

    async def download(self, url: str) -> bytes:
        return parse_bytes(await self._send(self._download_request(url)))

    async def _send(self, request: dict[str, Any]) -> httpx.Response:
        try:
            return await self._http.request(**request)
        except RETRYABLE:
            return await self._http.request(**request)


WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def verify_webhook(
    secret: str, headers: Mapping[str, str], body: bytes | str, *, tolerance_s: float = 300, now: float | None = None
) -> dict[str, Any]:
    """Check a webhook per Standard Webhooks and return its JSON body; WebhookVerificationError otherwise.

    `secret` is the per-key `whsec_<base64>` secret; `body` must be the raw bytes as received. Any one
    matching `v1` signature is enough: during a secret rotation the server signs with both secrets.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    if any(not lowered.get(name) for name in WEBHOOK_HEADERS):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    webhook_id, timestamp, signatures = (lowered[name] for name in WEBHOOK_HEADERS)
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookVerificationError(f"invalid webhook-timestamp {timestamp!r}") from None
    # Both directions: an old timestamp is a replay; one far in the future would stay valid too long.
    if abs((time.time() if now is None else now) - sent_at) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp outside the tolerance")
    raw = body.encode() if isinstance(body, str) else body
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()
    expected = b"v1," + base64.b64encode(digest)
    if not any(hmac.compare_digest(candidate.encode(), expected) for candidate in signatures.split()):
        raise WebhookVerificationError("no matching signature")
    return json.loads(raw)
