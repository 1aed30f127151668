"""Webhooks to clients: Standard Webhooks signatures, a durable outbox, and delivery with retries.

A delivery row is written in the same transaction as the state change that causes it; the
sweeper sends due rows (any replica, claimed with SKIP LOCKED), recording every attempt.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from app.db.tables import ApiKey, WebhookDelivery
from app.db.task_writer import TaskHead
from app.errors import BadRequest
from app.outbox.outbound import Resolver, is_public

ROTATION_OVERLAP = timedelta(days=1)
RESOLVE_TIMEOUT_S = 5.0  # a submission does not wait longer on the webhook host's DNS
EVENT_TYPES = {"success": "task.succeeded", "fail": "task.failed"}


def delivery_row(task: TaskHead, now: datetime, retry_for_s: float) -> dict[str, Any]:
    """The outbox row of a finished task's webhook; its payload is rendered at the first attempt
    (see deliveries.payload)."""
    return {
        "webhook_id": "msg_" + secrets.token_urlsafe(18),
        "task_id": task.id,
        "api_key_id": task.api_key_id,
        "url": task.webhook_url,
        "event_type": EVENT_TYPES[task.state],
        "payload": {},
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "give_up_at": now + timedelta(seconds=retry_for_s),
        "created_at": now,
    }


def signing_secrets(key: ApiKey, now: datetime) -> list[str]:
    """The current secret, plus the previous one for a day after a rotation."""
    rotated = key.webhook_secret_rotated_at
    if key.previous_webhook_secret and rotated and now - rotated < ROTATION_OVERLAP:
        return [key.webhook_secret, key.previous_webhook_secret]
    return [key.webhook_secret]


def sign(secret_list: list[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature`: one `v1,<base64 HMAC-SHA256>` per secret, space-separated."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    signatures = []
    for secret in secret_list:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        signatures.append("v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode())
    return " ".join(signatures)


def signed_request(
    delivery: WebhookDelivery, payload: dict[str, Any], secret_list: list[str]
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret_list, delivery.webhook_id, timestamp, body),
    }
    return body, headers


def check_url_form(url: Any) -> str:
    if not isinstance(url, str) or len(url) > 2048:
        raise BadRequest("webhookUrl must be a URL string")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:  # also an unclosed IPv6 bracket
        raise BadRequest("webhookUrl must be an absolute http(s) URL") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() or not c.isprintable() for c in url)
    ):
        raise BadRequest("webhookUrl must be an absolute http(s) URL")
    return url


async def check_destination(url: str, allow_private: bool, resolver: Resolver) -> None:
    """Refuse at submit URLs that reach inside our own network (SSRF), unless explicitly allowed.

    Every delivery is checked again where it connects (app/outbox/outbound.py), since DNS answers can change.
    """
    if allow_private:
        return
    parts = urlsplit(url)
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            addresses = await resolver(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    except (OSError, UnicodeError, TimeoutError):  # UnicodeError: not encodable as IDNA (an empty or over-long label)
        addresses = []
    if not addresses:
        raise BadRequest(f"webhookUrl host {parts.hostname!r} cannot be resolved")
    if not all(is_public(ipaddress.ip_address(address)) for address in addresses):
        raise BadRequest("webhookUrl resolves to a private, loopback or link-local address")
