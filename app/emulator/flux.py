"""Kie's Flux Kontext API: POST /api/v1/flux/kontext/generate, GET /api/v1/flux/kontext/record-info."""

from typing import Any

from starlette.routing import Route

from app.emulator import checks, images
from app.emulator.dedicated import DedicatedJob
from app.emulator.endpoints import Family, create_endpoint, query_endpoint
from app.emulator.wire import KIE, kie_created, kie_record

ASPECT_RATIOS = ("21:9", "16:9", "4:3", "1:1", "3:4", "9:16")
DEFAULT_RATIO = "16:9"
MODELS = ("flux-kontext-pro", "flux-kontext-max")


class FluxJob(DedicatedJob):
    api = "flux-kontext"
    id_prefix = "fk_"
    failed_flag = 3  # GENERATE_FAILED; 2 (CREATE_TASK_FAILED) never happens once a task id was handed out
    success_msg = "BFL image generated successfully."
    failed_info = {"originImageUrl": "", "resultImageUrl": ""}

    @property
    def error_code(self) -> int:
        # Flux reports its generation failures as 501, in record-info as in the callback.
        return 501

    @property
    def model(self) -> str:
        return self.body.get("model") or MODELS[0]

    @property
    def ratio(self) -> tuple[float, float]:
        # An edit without aspectRatio keeps the source image's ratio, which the emulator cannot know,
        # so it uses the documented default like a generation.
        return images.parse_ratio(self.body.get("aspectRatio") or DEFAULT_RATIO) or images.SQUARE

    @property
    def extension(self) -> str:
        return "png" if self.body.get("outputFormat") == "png" else "jpg"

    def response(self) -> dict[str, Any]:
        # originImageUrl is BFL's short-lived original, resultImageUrl Kie's copy: here both are the same file.
        [url] = self.result_urls
        return {"originImageUrl": url, "resultImageUrl": url}

    def info(self) -> dict[str, Any]:
        return self.response()


def _safety_tolerance(body: dict[str, Any]) -> str | None:
    # Edits accept a narrower range than generations (facts section 4).
    highest = 2 if body.get("inputImage") else 6
    return checks.choice("safetyTolerance", tuple(range(highest + 1)))(body)


_validate = checks.kie_validator(
    (
        checks.text("prompt", required=True),
        checks.url("inputImage"),
        checks.choice("aspectRatio", ASPECT_RATIOS),
        checks.choice("outputFormat", ("jpeg", "png")),
        checks.boolean("promptUpsampling"),
        checks.choice("model", MODELS),
        checks.url("callBackUrl"),
        _safety_tolerance,
        checks.boolean("enableTranslation"),
        checks.text("watermark"),
        checks.boolean("uploadCn"),
    )
)

GENERATE = Family("fluxGenerate", KIE, FluxJob, _validate, kie_created)

ROUTES = [
    Route("/api/v1/flux/kontext/generate", create_endpoint(GENERATE), methods=["POST"]),
    Route(
        "/api/v1/flux/kontext/record-info",
        query_endpoint("fluxRecordInfo", KIE, FluxJob, kie_record),
        methods=["GET"],
    ),
]
