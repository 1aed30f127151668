"""One emulated Kie.ai job: its timeline, its recordInfo record and its callback body."""

import json
import math
from dataclasses import dataclass, field
from typing import Any

from app.emulator import images
from app.emulator.faults import Faults

CREDITS_PER_TASK = 4
# (state, start as a fraction of generate_s), latest first so the first match is the current state.
PHASES = (("generating", 0.4), ("queuing", 0.2), ("waiting", 0.0))
TERMINAL = ("success", "fail")


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


@dataclass(eq=False)
class Job:
    task_id: str
    body: dict[str, Any]
    faults: Faults  # snapshot taken at createTask, so later fault changes don't alter this job
    created: float
    generate_s: float  # 0 when callback_before_response made the job terminal at once
    failed: bool
    dropped: bool
    base_url: str  # of the createTask request, so result URLs work wherever the emulator is served
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def callback_url(self) -> str | None:
        return self.body.get("callBackUrl") or None

    @property
    def extension(self) -> str:
        return images.extension_for(self.body["input"])

    @property
    def result_urls(self) -> list[str]:
        return [f"{self.base_url}files/{self.task_id}/0.{self.extension}"]

    def phase(self, now: float) -> tuple[str, float]:
        """The current state and the time it began."""
        elapsed = now - self.created
        if elapsed >= self.generate_s:
            return ("fail" if self.failed else "success"), self.created + self.generate_s
        state, start = next((p for p in PHASES if elapsed >= p[1] * self.generate_s), PHASES[-1])
        return state, self.created + start * self.generate_s

    def record(self, now: float) -> dict[str, Any]:
        """recordInfo's `data`; param and resultJson are JSON strings as on the real API."""
        state, since = self.phase(now)
        terminal = state in TERMINAL
        return {
            "taskId": self.task_id,
            "model": self.body["model"],
            "state": state,
            "param": json.dumps(self.body),
            "resultJson": json.dumps({"resultUrls": self.result_urls}) if state == "success" else "",
            "failCode": self.faults.fail_code if state == "fail" else "",
            "failMsg": self.faults.fail_msg if state == "fail" else "",
            "costTime": _ms(self.generate_s) if terminal else None,
            "createTime": _ms(self.created),
            "updateTime": _ms(since),
            "completeTime": _ms(since) if terminal else None,
            "creditsConsumed": CREDITS_PER_TASK if state == "success" else 0,
        }

    def callback_body(self) -> dict[str, Any]:
        # Asked about "any time after completion": (created + generate_s) - created can round below generate_s.
        data = self.record(math.inf)
        data["costTime"] = math.ceil(self.generate_s)  # callbacks report seconds, recordInfo milliseconds
        if data["state"] == "success":
            return {"code": 200, "msg": "Playground task completed successfully.", "data": data}
        return {"code": 501, "msg": "Playground task failed.", "data": data}

    def summary(self, now: float) -> dict[str, Any]:
        return {
            "taskId": self.task_id,
            "model": self.body["model"],
            "input": self.body["input"],
            "callBackUrl": self.callback_url,
            "state": self.phase(now)[0],
            "createdAt": self.created,
            "deliveries": self.deliveries,
            "dropped": self.dropped,
        }
