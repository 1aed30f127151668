"""OpenAI's image sizes (`1536x1024`, `auto`) as a model's aspect ratio and resolution (pure).

A size takes the model's ratio nearest to width / height, if one is within RATIO_TOLERANCE, and, for models with
resolutions, the smallest one with at least as many pixels on the long side (1K = 1024, 2K = 2048, 4K = 4096).
ValueError says, in a client's words, why a size has no equivalent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from app.providers.catalogue import ModelSpec
from app.tasks.validation import shown

SIZE = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")
RATIO = re.compile(r"([1-9][0-9]?):([1-9][0-9]?)")
TIER = re.compile(r"([1-9])K")  # resolutions 1K, 2K, 4K: that many times 1024 pixels on the long side
LARGEST_SIDE = 4096  # the 4K tier, the largest any model makes
RATIO_TOLERANCE = 0.03  # 1792x1024 (1.75) is 16:9 (1.78); no two ratios of a model are this close


def size_fields(size: Any, model: ModelSpec) -> dict[str, str]:
    """The model's aspect ratio (and resolution, where it has them) that a size such as 1536x1024 asks for."""
    if size is None:
        return {}
    if not isinstance(size, str):
        raise ValueError("size must be a string such as 1024x1024, or auto")
    ratios = model_ratios(model)
    if size == "auto":
        param = model.fields.get("aspectRatio")
        return {"aspectRatio": "auto"} if param is not None and "auto" in (param.values or {}) else {}
    match = SIZE.fullmatch(size)
    if match is None:
        raise ValueError(f"size {shown(size)} is not valid: WIDTHxHEIGHT in pixels, such as 1024x1024, or auto")
    width, height = int(match[1]), int(match[2])
    if max(width, height) > LARGEST_SIDE:
        raise ValueError(f"size {size} is too large: at most {LARGEST_SIDE} pixels a side")
    ratio = nearest_ratio(width / height, ratios)
    if ratio is None:
        names = ", ".join(ratios) or "none"
        message = f"size {size} has no equivalent for model {model.name}: its aspect ratios are {names}"
        raise ValueError(f"{message} (a size takes the nearest within {RATIO_TOLERANCE:.0%})")
    return {"aspectRatio": ratio} | resolution_field(size, max(width, height), model)


def model_ratios(model: ModelSpec) -> dict[str, float]:
    """The model's aspect ratios that are ratios (not presets or auto), as width / height."""
    param = model.fields.get("aspectRatio")
    names = [name for name in (param.values or {}) if isinstance(name, str)] if param is not None else []
    return {name: int(m[1]) / int(m[2]) for name in names if (m := RATIO.fullmatch(name))}


def nearest_ratio(wanted: float, ratios: Mapping[str, float]) -> str | None:
    if not ratios:
        return None
    name = min(ratios, key=lambda each: abs(math.log(ratios[each] / wanted)))
    return name if abs(math.log(ratios[name] / wanted)) <= math.log1p(RATIO_TOLERANCE) else None


def resolution_field(size: str, long_side: int, model: ModelSpec) -> dict[str, str]:
    """The smallest of the model's resolutions whose long side is at least the size's."""
    param = model.fields.get("resolution")
    if param is None:
        return {}  # the model makes one size per ratio
    tiers = sorted((int(m[1]) * 1024, name) for name in (param.values or {}) if (m := TIER.fullmatch(str(name))))
    for pixels, name in tiers:
        if pixels >= long_side:
            return {"resolution": name}
    pixels, name = tiers[-1]
    message = f"size {size} is larger than model {model.name} makes: at most {pixels} pixels a side (resolution {name})"
    raise ValueError(message)
