"""Small real images for the emulator's result URLs, rendered with Pillow and cached."""

import functools
import io
from typing import Any

from PIL import Image, ImageDraw

# Pillow imports its format plugins lazily on first save/open. Doing that from two threads at once (the emulator
# and a gateway each serving in their own thread of one process) can fail with a circular-import ImportError,
# so load the PNG/JPEG plugins now, at import time.
Image.preinit()

LONG_SIDE = 512
# Kie's most extreme ratios are 1:8 and 8:1. Beyond that the short side has too few pixels to
# keep the requested ratio within 1%, so such values fall back to square like unknown ones.
MAX_RATIO = 8.0
SQUARE = (1.0, 1.0)
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg"}


def parse_ratio(value: Any) -> tuple[float, float] | None:
    """'W:H' -> (W, H); None for anything else ('auto', 'square_hd', out-of-range ratios)."""
    if not isinstance(value, str) or value.count(":") != 1:
        return None
    try:
        width, height = (float(part) for part in value.split(":"))
    except ValueError:
        return None
    if not (width > 0 and height > 0) or max(width / height, height / width) > MAX_RATIO:
        return None
    return width, height


def ratio_for(model_input: dict[str, Any]) -> tuple[float, float]:
    """aspect_ratio, or without it the deprecated image_size; 1:1 when not 'W:H' (e.g. 'auto')."""
    value = model_input["aspect_ratio"] if "aspect_ratio" in model_input else model_input.get("image_size")
    return parse_ratio(value) or SQUARE


def extension_for(model_input: dict[str, Any]) -> str:
    """File extension ('png' or 'jpg') from output_format; Kie's default is png."""
    return "jpg" if model_input.get("output_format") in ("jpg", "jpeg") else "png"


def size_for(ratio: tuple[float, float]) -> tuple[int, int]:
    width, height = ratio
    if width >= height:
        return LONG_SIDE, round(LONG_SIDE * height / width)
    return round(LONG_SIDE * width / height), LONG_SIDE


def render(ratio: tuple[float, float], extension: str) -> bytes:
    """Encoded image bytes of the given ratio; extension is 'png' or 'jpg'."""
    return _render_size(*size_for(ratio), extension)


@functools.lru_cache(maxsize=64)
def _render_size(width: int, height: int, extension: str) -> bytes:
    # Cached by pixel size, so equivalent ratios (16:9, 32:18) share one encoding.
    image = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (image, image.transpose(Image.Transpose.FLIP_TOP_BOTTOM), image.point(lambda v: 160)))
    inset = min(width, height) // 8
    ImageDraw.Draw(image).ellipse((inset, inset, width - inset, height - inset), outline="white", width=inset // 4 + 1)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if extension == "jpg" else "PNG")
    return buffer.getvalue()
