"""End to end: a callback answered 200 survives a SIGKILL of the gateway a moment later.

A callback is answered only once its transaction has committed: the task's new state, its
history row, its webhook outbox row, its copy rows and its inbox row. Nothing is derived from
the inbox when a gateway starts, so the database as the killed process left it must already
hold every one of them; and a callback that got no answer left all of them or none.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx
from sqlalchemy import select

from app.db.tables import CallbackEvent, StoredFile, Task, TaskEvent, WebhookDelivery
from tests.support.gateways import Emulator, gateway_env, market_callback, post_signed
from tests.support.servers import ProcessServer, ThreadServer, free_port

TASKS = 40
IN_FLIGHT = 8  # callbacks sent at once; the rest wait for a free slot
KILL_AFTER = 15  # answers: the kill falls after these, while up to IN_FLIGHT are in the gateway


@dataclass
class Rows:
    """What the database holds about one task after the kill."""

    state: str
    verdicts: list[str] = field(default_factory=list)
    terminal_events: list[tuple[str, str]] = field(default_factory=list)  # (to_state, outcome)
    deliveries: int = 0
    copies: int = 0


async def test_every_callback_answered_200_is_durable_after_a_sigkill(
    database_url: str, emulator: ThreadServer, kie: Emulator, make_key, sessions
) -> None:
    await kie.set_faults(generate_s=600)  # the emulator's own callbacks never come during the test
    port = free_port()
    # No sweeper poll either: only the test's callbacks finish tasks.
    env = gateway_env(database_url, emulator.url, port, STALE_AFTER_S="600", KIE_CREATE_LIMIT="0")
    gateway = await asyncio.to_thread(ProcessServer(env | {"WEBHOOK_ALLOW_PRIVATE": "yes"}, port).start)
    try:
        hooked = await submit_all(gateway.url, await make_key())
        states = expected_states(await kie.tasks())
        answers = await fire_and_kill(gateway, states)
    finally:
        gateway.stop()
    found = await rows_by_task(sessions)
    answered = {task_id for task_id, status in answers.items() if status is not None}
    assert {status for status in answers.values() if status is not None} == {200}, answers
    assert KILL_AFTER <= len(answered) <= KILL_AFTER + IN_FLIGHT, len(answered)
    complete = {
        task_id for task_id, (_, state) in states.items() if is_complete(found[task_id], state, task_id in hooked)
    }
    print(f"SIGKILL mid-callbacks: {len(answered)} answered, {len(complete - answered)} committed unanswered")
    assert answered <= complete, {task_id: found[task_id] for task_id in answered - complete}
    partial = {task_id: found[task_id] for task_id in states.keys() - complete if not is_untouched(found[task_id])}
    assert not partial, partial


async def submit_all(url: str, key: str) -> set[str]:
    """Create the tasks, three in four with a webhook; -> the ids of those with one."""
    hook = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens: deliveries stay in the outbox
    limit = asyncio.Semaphore(IN_FLIGHT)

    async def submit(http: httpx.AsyncClient, n: int) -> tuple[str, bool]:
        body = {"prompt": f"fox {n}"} | ({"webhookUrl": hook} if n % 4 else {})
        async with limit:
            response = await http.post("/api/images/generate", json=body, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["taskId"], bool(n % 4)

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        created = await asyncio.gather(*(submit(http, n) for n in range(TASKS)))
    return {task_id for task_id, has_hook in created if has_hook}


def expected_states(jobs: list[dict]) -> dict[str, tuple[dict, str]]:
    """task id -> (its upstream job, the state its callback reports): alternately success and fail."""
    by_task = {job["callBackUrl"].split("/")[-2]: job for job in jobs}
    assert len(by_task) == TASKS
    return {task_id: (job, ("success", "fail")[n % 2]) for n, (task_id, job) in enumerate(sorted(by_task.items()))}


async def fire_and_kill(gateway: ProcessServer, states: dict[str, tuple[dict, str]]) -> dict[str, int | None]:
    """Send every callback, IN_FLIGHT at a time, and SIGKILL the gateway at the KILL_AFTER-th answer.

    -> task id -> the status answered, or None if no answer came (refused, cut or never sent).
    """
    answers: dict[str, int | None] = {}
    limit, killed = asyncio.Semaphore(IN_FLIGHT), asyncio.Event()

    async def fire(task_id: str, job: dict, state: str) -> None:
        async with limit:
            answers[task_id] = None if killed.is_set() else await answer_of(job, state)
            if sum(status is not None for status in answers.values()) == KILL_AFTER and not killed.is_set():
                killed.set()  # before the kill itself: no callback starts from here on
                await asyncio.to_thread(gateway.kill)

    await asyncio.wait_for(asyncio.gather(*(fire(t, job, state) for t, (job, state) in states.items())), 25)
    return answers


async def answer_of(job: dict, state: str) -> int | None:
    body = market_callback(job["taskId"], state=state, failMsg="Content policy")
    try:
        return (await post_signed(job["callBackUrl"], body)).status_code
    except httpx.TransportError:
        return None


async def rows_by_task(sessions) -> dict[str, Rows]:
    async with sessions() as session:
        found = {task.id: Rows(task.state) for task in (await session.execute(select(Task))).scalars()}
        for task_id, verdict in await session.execute(select(CallbackEvent.task_id, CallbackEvent.verdict)):
            found[task_id].verdicts.append(verdict)
        events = select(TaskEvent.task_id, TaskEvent.to_state, TaskEvent.outcome)
        for task_id, to_state, outcome in await session.execute(events.where(TaskEvent.source == "callback")):
            found[task_id].terminal_events.append((to_state, outcome))
        for (task_id,) in await session.execute(select(WebhookDelivery.task_id)):
            found[task_id].deliveries += 1
        for (task_id,) in await session.execute(select(StoredFile.task_id)):
            found[task_id].copies += 1
    return found


def is_complete(rows: Rows, state: str, hooked: bool) -> bool:
    """The callback's whole transaction is there: state, inbox, history, outbox, copies."""
    return (
        rows.state == state
        and rows.verdicts == ["applied"]
        and rows.terminal_events == [(state, "applied")]
        and rows.deliveries == int(hooked)
        and rows.copies == int(state == "success")  # one result image per success callback
    )


def is_untouched(rows: Rows) -> bool:
    """Nothing of the callback is there: the task is still waiting for it."""
    return rows.state not in ("success", "fail") and not (
        rows.verdicts or rows.terminal_events or rows.deliveries or rows.copies
    )
