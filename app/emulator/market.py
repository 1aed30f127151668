"""Kie's market jobs API: POST /api/v1/jobs/createTask, GET /api/v1/jobs/recordInfo, market callbacks."""

import json
import math
from typing import Any

from starlette.routing import Route

from app.emulator import checks, images
from app.emulator.endpoints import Family, create_endpoint, query_endpoint
from app.emulator.jobs import TERMINAL, Job, image_count, ms
from app.emulator.wire import KIE, kie_created, kie_record


class MarketJob(Job):
    api = "market"
    id_prefix = "task_"

    @property
    def model(self) -> str:
        return self.body["model"]

    @property
    def input(self) -> dict[str, Any]:
        return self.body["input"]

    @property
    def ratio(self) -> tuple[float, float]:
        return images.ratio_for(self.input)

    @property
    def extension(self) -> str:
        return images.extension_for(self.input)

    @property
    def count(self) -> int:
        # Models name their batch size differently (num_images, seedream's max_images), often as a string.
        return image_count(self.input.get("num_images", self.input.get("max_images")))

    def record(self, now: float) -> dict[str, Any]:
        """recordInfo's `data`; param and resultJson are JSON strings as on the real API."""
        state, since = self.phase(now)
        terminal = state in TERMINAL
        return {
            "taskId": self.task_id,
            "model": self.model,
            "state": state,
            "param": json.dumps(self.body),
            "resultJson": json.dumps({"resultUrls": self.result_urls}) if state == "success" else "",
            "failCode": self.faults.fail_code if state == "fail" else "",
            "failMsg": self.faults.fail_msg if state == "fail" else "",
            "costTime": ms(self.generate_s) if terminal else None,
            "createTime": ms(self.created),
            "updateTime": ms(since),
            "completeTime": ms(since) if terminal else None,
            "creditsConsumed": self.credits if state == "success" else 0,
        }

    def callback_body(self) -> dict[str, Any]:
        # Asked about "any time after completion": (created + generate_s) - created can round below generate_s.
        data = self.record(math.inf)
        data["costTime"] = math.ceil(self.generate_s)  # callbacks report seconds, recordInfo milliseconds
        if data["state"] == "success":
            return {"code": 200, "msg": "Playground task completed successfully.", "data": data}
        return {"code": 501, "msg": "Playground task failed.", "data": data}


_validate = checks.kie_validator(
    (
        checks.text("model", required=True),
        checks.obj("input"),
        checks.nested("input", checks.text("prompt", required=True)),
        checks.url("callBackUrl"),
    )
)


CREATE = Family("createTask", KIE, MarketJob, _validate, kie_created)

ROUTES = [
    Route("/api/v1/jobs/createTask", create_endpoint(CREATE), methods=["POST"]),
    Route("/api/v1/jobs/recordInfo", query_endpoint("recordInfo", KIE, MarketJob, kie_record), methods=["GET"]),
]
