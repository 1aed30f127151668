"""Kie's 4o Image API (GPT Image 1): POST /api/v1/gpt4o-image/generate, GET /api/v1/gpt4o-image/record-info."""

from typing import Any

from starlette.routing import Route

from app.emulator import checks, images
from app.emulator.dedicated import DedicatedJob
from app.emulator.endpoints import Family, create_endpoint, query_endpoint
from app.emulator.wire import KIE, kie_created, kie_record

SIZES = ("1:1", "3:2", "2:3")
STATUSES = {"success": "SUCCESS", "fail": "GENERATE_FAILED"}  # every other timeline state is GENERATING


class Gpt4oJob(DedicatedJob):
    api = "4o"
    id_prefix = "4o_"
    failed_flag = 2
    success_msg = "success"
    failed_info = None

    @property
    def model(self) -> str:
        return "gpt-image-1"  # the API has no model field; this is the model behind it

    @property
    def ratio(self) -> tuple[float, float]:
        return images.parse_ratio(self.body["size"]) or images.SQUARE

    @property
    def extension(self) -> str:
        return "png"

    @property
    def count(self) -> int:
        return self.body.get("nVariants") or 1

    def response(self) -> dict[str, Any]:
        # Copies of the docs disagree (resultUrls vs result_urls); the OpenAPI spec's spelling is used here.
        return {"resultUrls": self.result_urls}

    def info(self) -> dict[str, Any]:
        return {"result_urls": self.result_urls}  # the callback page's spelling

    def record(self, now: float) -> dict[str, Any]:
        state = self.phase(now)[0]
        return {
            **super().record(now),
            "progress": f"{self.progress(now):.2f}",  # a string, "0.00".."1.00"
            "status": STATUSES.get(state, "GENERATING"),
        }


def _prompt_or_files(body: dict[str, Any]) -> str | None:
    if body.get("prompt") or body.get("filesUrl"):
        return None
    return "prompt or filesUrl is required"


_validate = checks.kie_validator(
    (
        checks.choice("size", SIZES, required=True),
        checks.text("prompt"),
        checks.url_list("filesUrl", 5),
        _prompt_or_files,
        checks.choice("nVariants", (1, 2, 4)),
        checks.url("maskUrl"),
        checks.url("callBackUrl"),
        checks.boolean("isEnhance"),
        checks.boolean("uploadCn"),
        checks.boolean("enableFallback"),
        checks.choice("fallbackModel", ("GPT_IMAGE_1", "FLUX_MAX")),
    )
)

GENERATE = Family("gpt4oGenerate", KIE, Gpt4oJob, _validate, kie_created)

ROUTES = [
    Route("/api/v1/gpt4o-image/generate", create_endpoint(GENERATE), methods=["POST"]),
    Route(
        "/api/v1/gpt4o-image/record-info",
        query_endpoint("gpt4oRecordInfo", KIE, Gpt4oJob, kie_record),
        methods=["GET"],
    ),
]
