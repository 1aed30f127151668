"""Every model imagehook offers: one table entry each drives validation, discovery and the
upstream request. Request fields use the gateway's names (`aspectRatio`, `numImages`, …);
each entry says which upstream field a request field becomes and which values it takes.

Defaults are the provider's documented ones, except nano-banana-pro, whose defaults are the
seed gateway's (16:9, 2K, png) so existing callers see no change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.providers.params import Param, enum, flag, integer, number, text, url

DEFAULT_MODEL = "nano-banana-pro"


@dataclass(frozen=True)
class Api:
    """How a family of models is reached: provider, body shape, and whether it calls back."""

    name: str
    provider: str
    callback_route: str | None  # the path segment of its callback URL; None: it must be polled
    wraps_input: bool = False  # {"model": ..., "input": {...}} rather than a flat body
    names_model: bool = False  # a flat body that still carries "model"


MARKET = Api("market", "kie", callback_route="kie", wraps_input=True)
GPT4O = Api("4o", "kie", callback_route="kie-4o")
FLUX_KONTEXT = Api("flux-kontext", "kie", callback_route="kie-flux-kontext", names_model=True)
KVID = Api("kvid", "kvid", callback_route=None)


@dataclass(frozen=True)
class Prompt:
    max_length: int
    min_length: int = 1
    upstream: str = "prompt"
    optional_with_images: bool = False  # 4o accepts images alone


@dataclass(frozen=True)
class Images:
    upstream: str
    max_count: int
    required: bool = False
    single: bool = False  # the upstream field takes one URL, not a list


@dataclass(frozen=True)
class ModelSpec:
    name: str
    api: Api
    prompt: Prompt
    fields: Mapping[str, Param] = field(default_factory=dict)  # request field -> Param
    options: Mapping[str, Param] = field(default_factory=dict)  # `options` key -> Param
    images: Images | None = None

    def body(self, values: dict[str, Any]) -> dict[str, Any]:
        """The upstream request body, less the callback URL."""
        if self.api.wraps_input:
            return {"model": self.name, "input": values}
        return values | ({"model": self.name} if self.api.names_model else {})


BANANA_RATIOS = "1:1 2:3 3:2 3:4 4:3 4:5 5:4 9:16 16:9 21:9 auto"
RES = "1K 2K 4K"
PRESETS = ("square", "square_hd", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9")
SEEDREAM_PRESETS = (*PRESETS, "portrait_3_2", "landscape_3_2", "landscape_21_9")
RATIO_PRESETS = {
    "1:1": "square_hd",
    "4:3": "landscape_4_3",
    "3:4": "portrait_4_3",
    "16:9": "landscape_16_9",
    "9:16": "portrait_16_9",
    "3:2": "landscape_3_2",
    "2:3": "portrait_3_2",
    "21:9": "landscape_21_9",
}


def preset_sizes(presets: tuple[str, ...], default: str) -> Param:
    """`image_size` presets, also reachable by ratio: aspectRatio "16:9" -> landscape_16_9."""
    by_ratio = {ratio: preset for ratio, preset in RATIO_PRESETS.items() if preset in presets}
    return enum("image_size", by_ratio | {p: p for p in presets}, default=default)


def num_images_as_string(high: int = 4) -> Param:
    return integer("num_images", 1, high, as_string=True)


SEED = integer("seed", 0, 2**31 - 1)
GOOGLE_BANANA = {
    "aspectRatio": enum("aspect_ratio", BANANA_RATIOS, "1:1"),
    "outputFormat": enum("output_format", "png jpeg", "png"),
}
SEEDREAM_V4 = {
    "aspectRatio": preset_sizes(SEEDREAM_PRESETS, "square_hd"),
    "resolution": enum("image_resolution", RES, "1K"),
    "numImages": integer("max_images", 1, 6),
    "seed": SEED,
}
SEEDREAM_45 = {
    "aspectRatio": enum("aspect_ratio", "1:1 4:3 3:4 16:9 9:16 2:3 3:2 21:9", "1:1"),
    "resolution": enum("quality", {"2K": "basic", "4K": "high"}, "2K"),
}
IMAGEN4 = {
    "aspectRatio": enum("aspect_ratio", "1:1 16:9 9:16 3:4 4:3 auto", "1:1"),
    "negativePrompt": text("negative_prompt", 5000),
    "seed": integer("seed", 0, 2**31 - 1, as_string=True),
}
IDEOGRAM_OPTIONS = {
    "rendering_speed": enum("rendering_speed", "TURBO BALANCED QUALITY"),
    "expand_prompt": flag("expand_prompt"),
}
IDEOGRAM = {
    "aspectRatio": preset_sizes(PRESETS, "square_hd"),
    "negativePrompt": text("negative_prompt", 5000),
    "seed": SEED,
}
FLUX2 = {"resolution": enum("resolution", "1K 2K", "1K")}
FLUX2_RATIOS = "1:1 4:3 3:4 16:9 9:16 3:2 2:3"
GPT_IMAGE_OPTIONS = {"quality": enum("quality", "medium high", "medium")}
QWEN = {
    "seed": SEED,
    "outputFormat": enum("output_format", "png jpeg", "png"),
    "negativePrompt": text("negative_prompt", 500),
}
QWEN_OPTIONS = {
    "guidance_scale": number("guidance_scale", 0, 20),
    "acceleration": enum("acceleration", "none regular high"),
}
KVID_FIELDS = {
    "aspectRatio": enum("aspect_ratio", "1:1 16:9 9:16 4:3 3:4 3:2 2:3", "1:1"),
    "outputFormat": enum("output_format", "jpeg png", "jpeg"),
    "negativePrompt": text("negative_prompt", 2000),
    "seed": SEED,
    "numImages": integer("num_images", 1, 4),
}
KVID_OPTIONS = {
    "num_inference_steps": enum("num_inference_steps", {20: 20, 30: 30, 40: 40, 50: 50}),
    "guidance_scale": enum("guidance_scale", {3: 3, 5: 5, 7.5: 7.5, 10: 10}),
    "enable_safety_checker": flag("enable_safety_checker"),
}
FLUX_KONTEXT_FIELDS = {
    # No default ratio: in edit mode Kie keeps the source image's ratio when none is sent.
    "aspectRatio": enum("aspectRatio", "21:9 16:9 4:3 1:1 3:4 9:16"),
    "outputFormat": enum("outputFormat", "jpeg png", "jpeg"),
}
FLUX_KONTEXT_OPTIONS = {
    "promptUpsampling": flag("promptUpsampling"),
    "safetyTolerance": integer("safetyTolerance", 0, 6),
    "enableTranslation": flag("enableTranslation"),
    "watermark": text("watermark", 200),
    "uploadCn": flag("uploadCn"),
}

MODEL_LIST = (
    ModelSpec(
        "nano-banana-pro",
        MARKET,
        Prompt(10000),
        {
            "aspectRatio": enum("aspect_ratio", BANANA_RATIOS, "16:9"),
            "resolution": enum("resolution", RES, "2K"),
            "outputFormat": enum("output_format", "png jpg", "png"),
        },
        images=Images("image_input", 8),
    ),
    ModelSpec(
        "nano-banana-2",
        MARKET,
        Prompt(20000),
        {
            "aspectRatio": enum(
                "aspect_ratio", "auto 1:1 1:4 1:8 2:3 3:2 3:4 4:1 4:3 4:5 5:4 8:1 9:16 16:9 21:9", "auto"
            ),
            "resolution": enum("resolution", RES, "1K"),
            "outputFormat": enum("output_format", "jpg png", "jpg"),
        },
        {"google_search": flag("google_search")},
        images=Images("image_input", 14),
    ),
    ModelSpec("google/nano-banana", MARKET, Prompt(5000), GOOGLE_BANANA, {"nsfw_checker": flag("nsfw_checker")}),
    ModelSpec("google/nano-banana-edit", MARKET, Prompt(5000), GOOGLE_BANANA, images=Images("image_urls", 10, True)),
    ModelSpec(
        "bytedance/seedream-v4-text-to-image", MARKET, Prompt(5000), SEEDREAM_V4, {"nsfw_checker": flag("nsfw_checker")}
    ),
    ModelSpec(
        "bytedance/seedream-v4-edit",
        MARKET,
        Prompt(5000),
        SEEDREAM_V4,
        {"nsfw_checker": flag("nsfw_checker")},
        Images("image_urls", 10, True),
    ),
    ModelSpec("seedream/4.5-text-to-image", MARKET, Prompt(3000), SEEDREAM_45),
    ModelSpec("seedream/4.5-edit", MARKET, Prompt(3000), SEEDREAM_45, images=Images("image_urls", 14, True)),
    ModelSpec("google/imagen4", MARKET, Prompt(5000), IMAGEN4),
    ModelSpec("google/imagen4-ultra", MARKET, Prompt(5000), IMAGEN4),
    ModelSpec(
        "google/imagen4-fast",
        MARKET,
        Prompt(5000),
        IMAGEN4
        | {"aspectRatio": enum("aspect_ratio", "1:1 16:9 9:16 3:4 4:3 auto", "16:9"), "seed": SEED}
        | {"numImages": num_images_as_string()},
    ),
    ModelSpec(
        "ideogram/v3-text-to-image",
        MARKET,
        Prompt(5000),
        IDEOGRAM,
        IDEOGRAM_OPTIONS | {"style": enum("style", "AUTO GENERAL REALISTIC DESIGN")},
    ),
    ModelSpec(
        "ideogram/character",
        MARKET,
        Prompt(5000),
        IDEOGRAM | {"numImages": num_images_as_string()},
        IDEOGRAM_OPTIONS | {"style": enum("style", "AUTO REALISTIC FICTION")},
        # Kie uses only the first reference image, so more than one is refused rather than dropped.
        Images("reference_image_urls", 1, True),
    ),
    ModelSpec(
        "flux-2/pro-text-to-image",
        MARKET,
        Prompt(5000, 3),
        FLUX2 | {"aspectRatio": enum("aspect_ratio", FLUX2_RATIOS, "1:1")},
    ),
    ModelSpec(
        "flux-2/flex-text-to-image",
        MARKET,
        Prompt(5000, 3),
        FLUX2 | {"aspectRatio": enum("aspect_ratio", FLUX2_RATIOS + " auto", "1:1")},
    ),
    *(
        # "auto" matches the first input image's ratio.
        ModelSpec(
            name,
            MARKET,
            Prompt(5000, 3),
            FLUX2 | {"aspectRatio": enum("aspect_ratio", FLUX2_RATIOS + " auto", "auto")},
            images=Images("input_urls", 8, True),
        )
        for name in ("flux-2/pro-image-to-image", "flux-2/flex-image-to-image")
    ),
    ModelSpec(
        "gpt-image/1.5-text-to-image",
        MARKET,
        Prompt(10000),
        {"aspectRatio": enum("aspect_ratio", "1:1 2:3 3:2", "1:1")},
        GPT_IMAGE_OPTIONS,
    ),
    ModelSpec(
        "gpt-image/1.5-image-to-image",
        MARKET,
        Prompt(10000),
        {"aspectRatio": enum("aspect_ratio", "1:1 2:3 3:2", "3:2")},
        GPT_IMAGE_OPTIONS,
        Images("input_urls", 16, True),
    ),
    ModelSpec(
        "qwen/text-to-image",
        MARKET,
        Prompt(5000),
        QWEN | {"aspectRatio": preset_sizes(PRESETS, "square_hd")},
        QWEN_OPTIONS
        | {
            "num_inference_steps": integer("num_inference_steps", 2, 250),
            "enable_safety_checker": flag("enable_safety_checker"),
        },
    ),
    ModelSpec(
        "qwen/image-edit",
        MARKET,
        Prompt(2000),
        QWEN | {"aspectRatio": preset_sizes(PRESETS, "landscape_4_3"), "numImages": num_images_as_string()},
        QWEN_OPTIONS | {"num_inference_steps": integer("num_inference_steps", 2, 49), "sync_mode": flag("sync_mode")},
        Images("image_url", 1, True, single=True),
    ),
    ModelSpec(
        "gpt4o-image",
        GPT4O,
        Prompt(5000, optional_with_images=True),
        {
            "aspectRatio": enum("size", "1:1 3:2 2:3", "1:1"),
            "numImages": enum("nVariants", {1: 1, 2: 2, 4: 4}, 1),
        },
        {
            "maskUrl": url("maskUrl"),
            "isEnhance": flag("isEnhance"),
            "enableFallback": flag("enableFallback"),
            "fallbackModel": enum("fallbackModel", "GPT_IMAGE_1 FLUX_MAX"),
            "uploadCn": flag("uploadCn"),
        },
        Images("filesUrl", 5),
    ),
    *(
        ModelSpec(
            name,
            FLUX_KONTEXT,
            Prompt(5000),
            FLUX_KONTEXT_FIELDS,
            FLUX_KONTEXT_OPTIONS,
            Images("inputImage", 1, single=True),
        )
        for name in ("flux-kontext-pro", "flux-kontext-max")
    ),
    ModelSpec("kvid/text-to-image", KVID, Prompt(2000), KVID_FIELDS, KVID_OPTIONS),
    ModelSpec(
        "kvid/image-to-image", KVID, Prompt(2000), KVID_FIELDS, KVID_OPTIONS, Images("image_url", 1, True, single=True)
    ),
)
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in MODEL_LIST}
