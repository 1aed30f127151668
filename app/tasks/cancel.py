"""Canceling tasks: by their owner (POST /api/images/tasks/{taskId}/cancel), or by the sweeper once a
task's Cancel-After deadline passes (app/tasks/sweeper.py).

Either way the task ends `fail` with failCode `canceled` through apply_updates, like any other end: its
webhook, feed event and dropped cached statuses follow as for any terminal state, and its reserved
credits stop counting (a failed task costs what the provider reports, else nothing). A task not yet
sent upstream is then never sent (submit.send_task looks first). One already sent cannot be stopped,
as Kie has no call for that: its later callback is kept in the inbox and the task's history, the task
stays canceled, and the credits the callback reports are recorded (updates._charged_after_cancel).
"""

from __future__ import annotations

from app.db.task_writer import SessionWriter
from app.deps import Deps
from app.errors import NotFound
from app.reads.status_cache import CachedStatus
from app.tasks.domain import CANCELED, State, Update
from app.tasks.status import read_status
from app.tasks.updates import Outcome, apply_update

CANCELED_BY_CLIENT = Update(State.FAIL, fail_code=CANCELED, fail_msg="Canceled")
DEADLINE_PASSED = Update(State.FAIL, fail_code=CANCELED, fail_msg="Deadline passed")


async def cancel_task(deps: Deps, *, api_key_id: int, task_id: str) -> tuple[CachedStatus, bool]:
    """Cancel the client's task. Returns its status after, and whether it is canceled (by this request
    or an earlier one) rather than finished otherwise first. Another client's task is NotFound, as no task is."""
    async with deps.write() as session:
        writer = SessionWriter(session)
        head = (await writer.lock_heads([task_id])).get(task_id)
        if head is None or head.api_key_id != api_key_id:
            raise NotFound("Task not found")
        canceled = head.fail_code == CANCELED
        if not State(head.state).terminal:
            outcome = await apply_update(deps, writer, task_id, CANCELED_BY_CLIENT, "cancel")
            canceled = outcome is Outcome.APPLIED
    return await read_status(deps, api_key_id, task_id), canceled
