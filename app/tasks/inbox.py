"""Kie.ai callbacks (market, 4o Image, Flux Kontext): verify, keep in the inbox, apply.

Nothing is read from a body before the URL token is verified; only the upstream task id is
read before the signature is.
"""

from __future__ import annotations

import functools
import hmac
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import queries
from app.db.tables import CallbackEvent
from app.deps import Deps
from app.errors import ProviderError
from app.inbound.untrusted import clean_text, load_json, scrub
from app.providers import Provider
from app.providers.catalogue import FLUX_KONTEXT, GPT4O, MARKET, Api
from app.providers.kie import signature as kie_signature
from app.providers.kie.client import CALLBACK_READERS
from app.providers.kie.market import callback_task_id
from app.tasks.domain import Update
from app.tasks.submit import callback_token
from app.tasks.updates import Outcome, apply_updates

log = logging.getLogger(__name__)

SIGNATURE_WINDOW_S = 300
TIMESTAMP = re.compile(r"[0-9]{1,12}")  # Unix seconds, ASCII digits; anything longer is no time at all
ROUTE_APIS = {api.callback_route: api for api in (MARKET, GPT4O, FLUX_KONTEXT)}
KEPT_HEADERS = ("content-type", "user-agent", "x-webhook-timestamp", "x-webhook-signature")


@dataclass(frozen=True)
class Verdict:
    status: int
    verdict: str
    message: str = "success"


REJECTED_TOKEN = Verdict(401, "rejected:token", "Invalid callback credentials")
REJECTED_SIGNATURE = Verdict(401, "rejected:signature", "Invalid callback signature")
REJECTED_TIMESTAMP = Verdict(401, "rejected:timestamp", "Callback timestamp outside the allowed window")
MALFORMED = Verdict(400, "rejected:malformed", "Malformed callback body")
# Signed by the provider perhaps, but about another upstream task than the one this URL is for.
REJECTED_UPSTREAM_ID = Verdict(409, "rejected:upstream-id", "Callback names a different upstream task than this task's")
# Kie could not confirm it just now: answered 200, and the sweeper asks Kie at once instead.
UNCONFIRMED = Verdict(200, "unconfirmed")


async def receive_callback(
    deps: Deps, route: str, task_id: str, token: str, headers: Mapping[str, str], raw: bytes
) -> Verdict:
    """`route` is the callback URL's API segment (kie, kie-4o, kie-flux-kontext)."""
    verdict, change = _verify_and_read(deps, route, task_id, token, headers, raw)
    client = deps.providers.get("kie")
    if change is not None and deps.settings.callback_confirm and client is not None:
        change = await _confirm(client, ROUTE_APIS[route], change)
        verdict = verdict if change is not None else UNCONFIRMED
    inbox = {
        "task_id": task_id[:40],
        "provider": route,
        "received_at": deps.clock(),
        "headers": {name: clean_text(headers[name], 500) for name in KEPT_HEADERS if name in headers},
        "body": clean_text(raw.decode("utf-8", errors="replace")),
    }
    # Answered only once committed; callbacks arriving together share the transaction.
    received = Received(task_id, verdict, change, inbox)
    verdict = await deps.group_commit("callbacks", functools.partial(record_callbacks, deps)).run(received)
    if verdict.status != 200:
        log.warning("callback for task %s refused: %s", task_id, verdict.verdict)
    return verdict


@dataclass(frozen=True)
class Received:
    task_id: str
    verdict: Verdict  # what verification found
    change: Update | None  # what the callback says, if it is to be applied
    inbox: dict[str, Any]  # its callback_events row, but for the final verdict


async def record_callbacks(deps: Deps, session: AsyncSession, group: list[Received]) -> list[Verdict]:
    """Apply a group of callbacks and keep each in the inbox with its final verdict."""
    changes = [(item.task_id, item.change, "callback") for item in group if item.change is not None]
    outcomes = iter(await apply_updates(deps, session, changes))
    verdicts = []
    for item in group:
        verdict = item.verdict
        if item.change is not None:
            outcome = next(outcomes)
            verdict = REJECTED_UPSTREAM_ID if outcome is Outcome.MISMATCH else Verdict(200, outcome.value)
        elif verdict is UNCONFIRMED:
            await queries.reschedule(session, item.task_id, deps.clock())
        verdicts.append(verdict)
    rows = [{**item.inbox, "verdict": verdict.verdict} for item, verdict in zip(group, verdicts, strict=True)]
    await session.execute(insert(CallbackEvent), rows)
    return verdicts


def _verify_and_read(
    deps: Deps, route: str, task_id: str, token: str, headers: Mapping[str, str], raw: bytes
) -> tuple[Verdict, Update | None]:
    expected = callback_token(deps.settings.secret, task_id)
    if not hmac.compare_digest(expected.encode(), token.encode()):
        return REJECTED_TOKEN, None
    try:
        # Cleaned, not refused: a provider would only send the same body again.
        body = scrub(load_json(raw))
    except ValueError:
        return MALFORMED, None
    hmac_key = deps.settings.kieai_webhook_hmac_key
    if hmac_key is not None:
        refused = _check_signature(hmac_key, body, headers, deps.clock().timestamp())
        if refused is not None:
            return refused, None
    try:
        _, change = CALLBACK_READERS[route](body)
    except ValueError:
        return MALFORMED, None
    return Verdict(200, "accepted"), change


def _check_signature(key: str, body: object, headers: Mapping[str, str], now: float) -> Verdict | None:
    timestamp = headers.get("x-webhook-timestamp", "")
    signature = headers.get("x-webhook-signature", "")
    try:
        upstream_id = callback_task_id(body)
    except ValueError:
        return REJECTED_SIGNATURE
    if not kie_signature.is_valid(key, upstream_id, timestamp, signature):
        return REJECTED_SIGNATURE
    if not TIMESTAMP.fullmatch(timestamp) or abs(now - int(timestamp)) > SIGNATURE_WINDOW_S:
        return REJECTED_TIMESTAMP
    return None


async def _confirm(client: Provider, api: Api, change: Update) -> Update | None:
    """CALLBACK_CONFIRM=1: Kie's signature does not cover the body, so ask recordInfo instead.

    If Kie cannot be asked now, the callback is only a hint: the sweeper will ask later.
    """
    assert change.upstream_id is not None
    try:
        confirmed = await client.query(api, change.upstream_id)
    except ProviderError as exc:
        log.warning("could not confirm callback for %s: %s", change.upstream_id, exc.message)
        return None
    return replace(confirmed, upstream_id=change.upstream_id)
