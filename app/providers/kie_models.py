"""Kie.ai market models: one table entry per model drives validation and the upstream payload.

Request fields use the gateway's (seed) names; each entry says which Kie `input` field a
request field becomes, which values it accepts, and what is sent when the client omits it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# The gateway's own defaults (seeds/000): applied wherever a model accepts the value.
SEED_DEFAULTS = {"aspectRatio": "16:9", "resolution": "2K", "outputFormat": "png"}
DEFAULT_MODEL = "nano-banana-pro"


@dataclass(frozen=True)
class Choice:
    """A request field restricted to a set of values, sent upstream as `input_name`."""

    input_name: str
    values: tuple[str, ...]
    default: str | None = None


@dataclass(frozen=True)
class ImageInput:
    input_name: str
    max_count: int
    required: bool = False


@dataclass(frozen=True)
class ModelSpec:
    name: str
    prompt_max: int
    choices: Mapping[str, Choice] = field(default_factory=dict)
    images: ImageInput | None = None
    provider: str = "kie"


def choices(**fields: tuple[str, str]) -> dict[str, Choice]:
    """choices(aspectRatio=("aspect_ratio", "1:1 16:9")) -> {"aspectRatio": Choice(...)}."""
    table = {}
    for request_field, (input_name, values) in fields.items():
        allowed = tuple(values.split())
        default = SEED_DEFAULTS.get(request_field)
        table[request_field] = Choice(input_name, allowed, default if default in allowed else None)
    return table


BANANA_RATIOS = "1:1 2:3 3:2 3:4 4:3 4:5 5:4 9:16 16:9 21:9 auto"
RESOLUTIONS = "1K 2K 4K"
GOOGLE_BANANA_CHOICES = choices(aspectRatio=("aspect_ratio", BANANA_RATIOS), outputFormat=("output_format", "png jpeg"))

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "nano-banana-pro",
            prompt_max=10000,
            choices=choices(
                aspectRatio=("aspect_ratio", BANANA_RATIOS),
                resolution=("resolution", RESOLUTIONS),
                outputFormat=("output_format", "png jpg"),
            ),
            images=ImageInput("image_input", max_count=8),
        ),
        ModelSpec(
            "nano-banana-2",
            prompt_max=20000,
            choices=choices(
                aspectRatio=(
                    "aspect_ratio",
                    "auto 1:1 1:4 1:8 2:3 3:2 3:4 4:1 4:3 4:5 5:4 8:1 9:16 16:9 21:9",
                ),
                resolution=("resolution", RESOLUTIONS),
                outputFormat=("output_format", "jpg png"),
            ),
            images=ImageInput("image_input", max_count=14),
        ),
        ModelSpec("google/nano-banana", prompt_max=5000, choices=GOOGLE_BANANA_CHOICES),
        ModelSpec(
            "google/nano-banana-edit",
            prompt_max=5000,
            choices=GOOGLE_BANANA_CHOICES,
            images=ImageInput("image_urls", max_count=10, required=True),
        ),
    )
}
