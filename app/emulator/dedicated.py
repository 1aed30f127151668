"""What Kie's two dedicated image APIs (4o Image, Flux Kontext) share on the wire.

Both take a flat create body (no model/input split), answer record-info with successFlag/errorCode/response,
and call back with {"code", "msg", "data": {"taskId", "info"}} - note `info` in callbacks vs `response` in
record-info (facts section 5). Subclasses fill in the family-specific values.
"""

import json
from abc import abstractmethod
from typing import Any, ClassVar

from app.emulator.jobs import TERMINAL, Job, ms


class DedicatedJob(Job):
    failed_flag: ClassVar[int]  # successFlag of a failed job: 2 on 4o, 3 (GENERATE_FAILED) on Flux
    success_msg: ClassVar[str]  # callback msg on success
    failed_info: ClassVar[dict[str, str] | None]  # callback data.info on failure

    @property
    def error_code(self) -> int:
        """fail_code as a number when it is an HTTP-like error code (e.g. "400"), else 500."""
        code = self.faults.fail_code
        if len(code) == 3 and code.isascii() and code.isdigit() and 400 <= int(code) <= 599:
            return int(code)
        return 500

    @abstractmethod
    def response(self) -> dict[str, Any]:
        """record-info's `response` of a successful job."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """The success callback's data.info."""

    def record(self, now: float) -> dict[str, Any]:
        state, since = self.phase(now)
        failed = state == "fail"
        return {
            "taskId": self.task_id,
            "paramJson": json.dumps(self.body),  # a JSON string, like the market's `param`
            "completeTime": ms(since) if state in TERMINAL else None,
            "createTime": ms(self.created),
            "successFlag": {"success": 1, "fail": self.failed_flag}.get(state, 0),
            "errorCode": self.error_code if failed else None,
            "errorMessage": self.faults.fail_msg if failed else None,
            "response": self.response() if state == "success" else None,
        }

    def callback_body(self) -> dict[str, Any]:
        if self.failed:
            code, msg, info = self.error_code, self.faults.fail_msg, self.failed_info
        else:
            code, msg, info = 200, self.success_msg, self.info()
        return {"code": code, "msg": msg, "data": {"taskId": self.task_id, "info": info}}
