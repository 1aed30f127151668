"""Provider callbacks: verify, keep in the inbox, apply.

Nothing is read from a body before the URL token is verified; how the rest is checked and
read is up to the provider that owns the callback's route.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from app import signing
from app.db.tables import CallbackEvent
from app.db.task_writer import TaskWriter
from app.deps import Deps
from app.errors import ProviderError
from app.inbound.untrusted import clean_text
from app.inbound.url_values import is_task_id
from app.observe import metrics
from app.observe.logs import about_task
from app.providers.base import CallbackRefused, CallbackRoutes, Refusal
from app.tasks.domain import Update
from app.tasks.submit import callback_token
from app.tasks.updates import Outcome, apply_updates

log = logging.getLogger(__name__)

KEPT_HEADERS = ("content-type", "user-agent")  # and whatever the route's owner keeps


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
# The provider could not confirm it just now: answered 200, and the sweeper asks the provider at once instead.
UNCONFIRMED = Verdict(200, "unconfirmed")
REFUSED = {Refusal.SIGNATURE: REJECTED_SIGNATURE, Refusal.TIMESTAMP: REJECTED_TIMESTAMP, Refusal.MALFORMED: MALFORMED}


async def receive_callback(
    deps: Deps, owner: CallbackRoutes, route: str, task_id: str, token: str, headers: Mapping[str, str], raw: bytes
) -> Verdict:
    """`route` is the callback URL's API segment, one of those `owner` reads."""
    # The URL's id is not yet verified: it names the log lines only if it looks like an id.
    with about_task(task_id if is_task_id(task_id) else "(malformed)"):
        return await _receive(deps, owner, route, task_id, token, headers, raw)


async def _receive(
    deps: Deps, owner: CallbackRoutes, route: str, task_id: str, token: str, headers: Mapping[str, str], raw: bytes
) -> Verdict:
    verdict, change = _verify_and_read(deps, owner, route, task_id, token, headers, raw)
    if change is not None and deps.settings.callback_confirm:
        change = await _confirm(owner, route, change)
        verdict = verdict if change is not None else UNCONFIRMED
    kept = (*KEPT_HEADERS, *owner.kept_headers)
    inbox = {
        "task_id": task_id[:40],
        "provider": route,
        "received_at": deps.clock(),
        "headers": {name: clean_text(headers[name], 500) for name in kept if name in headers},
        "body": clean_text(raw.decode("utf-8", errors="replace")),
    }
    # Answered only once committed; callbacks arriving together share the transaction.
    received = Received(task_id, verdict, change, inbox)
    verdict = await deps.group_commit("callbacks", functools.partial(record_callbacks, deps)).run(received)
    metrics.labelled(metrics.CALLBACKS, route, verdict.verdict).inc()
    if verdict.status != 200:
        log.warning("callback for task %s refused: %s", task_id, verdict.verdict)
    return verdict


@dataclass(frozen=True)
class Received:
    task_id: str
    verdict: Verdict  # what verification found
    change: Update | None  # what the callback says, if it is to be applied
    inbox: dict[str, Any]  # its callback_events row, but for the final verdict


async def record_callbacks(deps: Deps, writer: TaskWriter, group: list[Received]) -> list[Verdict]:
    """Apply a group of callbacks and keep each in the inbox with its final verdict."""
    changes = [(item.task_id, item.change, "callback") for item in group if item.change is not None]
    outcomes = iter(await apply_updates(deps, writer, changes))
    verdicts = []
    for item in group:
        verdict = item.verdict
        if item.change is not None:
            outcome = next(outcomes)
            verdict = REJECTED_UPSTREAM_ID if outcome is Outcome.MISMATCH else Verdict(200, outcome.value)
        verdicts.append(verdict)
    await writer.reschedule([item.task_id for item in group if item.verdict is UNCONFIRMED], deps.clock())
    rows = [{**item.inbox, "verdict": verdict.verdict} for item, verdict in zip(group, verdicts, strict=True)]
    await writer.insert(CallbackEvent.__tablename__, rows)
    return verdicts


def _verify_and_read(
    deps: Deps, owner: CallbackRoutes, route: str, task_id: str, token: str, headers: Mapping[str, str], raw: bytes
) -> tuple[Verdict, Update | None]:
    expected = callback_token(deps.settings.secret, task_id)
    if not signing.matches(expected, token):
        return REJECTED_TOKEN, None
    try:
        return Verdict(200, "accepted"), owner.read(route, headers, raw, deps.clock())
    except CallbackRefused as exc:
        return REFUSED[exc.refusal], None


async def _confirm(owner: CallbackRoutes, route: str, change: Update) -> Update | None:
    """CALLBACK_CONFIRM=1: the provider's own record of the task replaces what the body says.

    If the provider cannot be asked now, the callback is only a hint: the sweeper will ask later.
    """
    assert change.upstream_id is not None
    try:
        confirmed = await owner.confirm(route, change.upstream_id)
    except ProviderError as exc:
        log.warning("could not confirm callback for %s: %s", change.upstream_id, exc.message)
        return None
    return change if confirmed is None else replace(confirmed, upstream_id=change.upstream_id)
