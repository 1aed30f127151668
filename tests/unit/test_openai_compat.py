"""OpenAI's Images API in imagehook's terms: sizes to aspect ratios and resolutions, parameters to a generate
request, tasks to answers, errors to OpenAI's shape; and an OpenAI edit mask redrawn as a black-and-white one.

The expected mappings are written out from the model table in the README, not read back from the catalogue.
"""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from app.errors import BadRequest
from app.providers.catalogue import MODELS
from app.tasks.openai_compat import (
    OpenAIError,
    error_answer,
    form_params,
    images_answer,
    images_request,
    size_fields,
    unfinished,
    validated,
)
from app.tasks.openai_sizes import LARGEST_SIDE, RATIO_TOLERANCE, model_ratios
from app.uploads import black_where_transparent

SIZED = sorted(name for name, spec in MODELS.items() if "aspectRatio" in spec.fields)
TIER_PIXELS = {"1K": 1024, "2K": 2048, "4K": 4096}


def refusal(call: Any, *args: Any, **kwargs: Any) -> OpenAIError:
    with pytest.raises(OpenAIError) as caught:
        call(*args, **kwargs)
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(
    ("model", "size", "fields"),
    [
        ("gpt4o-image", "1024x1024", {"aspectRatio": "1:1"}),
        ("gpt4o-image", "1536x1024", {"aspectRatio": "3:2"}),
        ("gpt4o-image", "1024x1536", {"aspectRatio": "2:3"}),
        ("gpt4o-image", "auto", {}),  # the 4o Image API has no auto: the model's default
        ("nano-banana-pro", "auto", {"aspectRatio": "auto"}),
        ("nano-banana-pro", "1024x1024", {"aspectRatio": "1:1", "resolution": "1K"}),
        ("nano-banana-pro", "256x256", {"aspectRatio": "1:1", "resolution": "1K"}),
        ("nano-banana-pro", "1792x1024", {"aspectRatio": "16:9", "resolution": "2K"}),
        ("nano-banana-pro", "1024x1792", {"aspectRatio": "9:16", "resolution": "2K"}),
        ("nano-banana-pro", "1536x1024", {"aspectRatio": "3:2", "resolution": "2K"}),
        ("nano-banana-pro", "4096x4096", {"aspectRatio": "1:1", "resolution": "4K"}),
        ("seedream/4.5-text-to-image", "1024x1024", {"aspectRatio": "1:1", "resolution": "2K"}),  # 2K is its least
        ("bytedance/seedream-v4-text-to-image", "1792x1024", {"aspectRatio": "16:9", "resolution": "2K"}),
        ("google/imagen4-fast", "512x512", {"aspectRatio": "1:1"}),
        ("nano-banana-2", "1024x8192", None),  # over 4096 a side
        ("nano-banana-2", "512x4096", {"aspectRatio": "1:8", "resolution": "4K"}),
        ("gpt4o-image", "1792x1024", None),  # no 16:9
        ("google/imagen4-fast", "1536x1024", None),  # no 3:2, and 4:3 is 12.5% off
        ("flux-2/pro-text-to-image", "4096x4096", None),  # at most 2K
        ("nano-banana-pro", "1024X1024", None),
        ("nano-banana-pro", "0x1024", None),
        ("nano-banana-pro", " 1024x1024", None),
    ],
)
def test_sizes_map_to_the_models_ratios_and_resolutions(model: str, size: str, fields: dict[str, str] | None) -> None:
    if fields is None:
        assert refusal(size_fields, size, MODELS[model]).param == "size"
    else:
        assert size_fields(size, MODELS[model]) == fields


def test_a_size_reaches_the_provider_in_its_own_terms() -> None:
    asked = images_request({"model": "bytedance/seedream-v4-text-to-image", "prompt": "a cat", "size": "1792x1024"})
    payload = validated(asked.body).payload["input"]
    assert (payload["image_size"], payload["image_resolution"]) == ("landscape_16_9", "2K")


@settings(max_examples=1000)  # cheap, and the edges between two ratios are narrow
@given(
    model=st.sampled_from(SIZED),
    width=st.integers(1, LARGEST_SIDE + 200),
    height=st.integers(1, LARGEST_SIDE + 200),
)
def test_any_size_gets_the_nearest_ratio_within_tolerance_and_enough_pixels_or_a_400(
    model: str, width: int, height: int
) -> None:
    spec, wanted = MODELS[model], width / height
    ratios = model_ratios(spec)
    tiers = (
        sorted(TIER_PIXELS[name] for name in spec.fields["resolution"].values) if "resolution" in spec.fields else []
    )
    off = {name: abs(math.log(ratio / wanted)) for name, ratio in ratios.items()}
    try:
        fields = size_fields(f"{width}x{height}", spec)
    except OpenAIError as exc:
        assert exc.param == "size" and str(width) in exc.message
        too_far = not off or min(off.values()) > math.log1p(RATIO_TOLERANCE)
        too_big = max(width, height) > min(LARGEST_SIDE, tiers[-1] if tiers else LARGEST_SIDE)
        assert too_far or too_big
        return
    chosen = fields["aspectRatio"]
    assert off[chosen] <= math.log1p(RATIO_TOLERANCE) and off[chosen] == min(off.values())
    if tiers:
        got = TIER_PIXELS[fields["resolution"]]
        assert got >= max(width, height) and all(tier < max(width, height) for tier in tiers if tier < got)
    else:
        assert "resolution" not in fields


@st.composite
def near_a_ratio(draw: st.DrawFn) -> tuple[str, str, int, int]:
    """A model, one of its ratios, and a size within the tolerance of it."""
    model = draw(st.sampled_from([name for name in SIZED if model_ratios(MODELS[name])]))
    ratio = draw(st.sampled_from(sorted(model_ratios(MODELS[model]))))
    short = draw(st.integers(256, 480))  # rounding moves its ratio by at most 0.2%; 8:1 stays within 4096
    factor = draw(st.floats(1 / (1 + RATIO_TOLERANCE * 0.9), 1 + RATIO_TOLERANCE * 0.9))
    wide = model_ratios(MODELS[model])[ratio] * factor
    width, height = (round(short * wide), short) if wide >= 1 else (short, round(short / wide))
    return model, ratio, width, height


@settings(max_examples=500)
@given(near_a_ratio())
def test_a_size_near_a_ratio_of_the_model_always_gets_it_or_a_nearer_one(case: tuple[str, str, int, int]) -> None:
    model, ratio, width, height = case
    ratios = model_ratios(MODELS[model])
    chosen = size_fields(f"{width}x{height}", MODELS[model])["aspectRatio"]
    off = {name: abs(math.log(value * height / width)) for name, value in ratios.items()}
    assert off[chosen] <= off[ratio]


@given(
    model=st.sampled_from(SIZED), size=st.one_of(st.text(max_size=20), st.integers(), st.none(), st.lists(st.text()))
)
def test_no_size_value_is_anything_but_a_mapping_or_a_400_naming_size(model: str, size: Any) -> None:
    try:
        fields = size_fields(size, MODELS[model])
    except OpenAIError as exc:
        assert exc.param == "size"
    else:
        assert set(fields) <= {"aspectRatio", "resolution"}


def test_openai_model_names_map_to_documented_models() -> None:
    names = ("gpt-image-1", "gpt-image-1.5", "dall-e-3", "dall-e-2")
    generate = {name: images_request({"model": name, "prompt": "x"}).body["model"] for name in names}
    assert generate == {
        "gpt-image-1": "gpt4o-image",
        "gpt-image-1.5": "gpt-image/1.5-text-to-image",
        "dall-e-3": "nano-banana-pro",
        "dall-e-2": "google/imagen4-fast",
    }
    edit = images_request({"model": "gpt-image-1.5", "prompt": "x"}, edit=True, images=1)
    assert edit.body["model"] == "gpt-image/1.5-image-to-image"
    assert images_request({"model": "dall-e-2", "prompt": "x"}, edit=True, images=1).body["model"] == "gpt4o-image"
    assert images_request({"prompt": "x"}).body["model"] == "nano-banana-pro"  # imagehook's default model
    assert images_request({"model": "kvid/text-to-image", "prompt": "x"}).body["model"] == "kvid/text-to-image"


def test_dall_e_sizes_default_to_a_square_and_gpt_image_answers_in_base64() -> None:
    dalle = images_request({"model": "dall-e-3", "prompt": "x"})
    assert (dalle.body["aspectRatio"], dalle.body["resolution"], dalle.response_format) == ("1:1", "1K", "url")
    gpt = images_request({"model": "gpt-image-1", "prompt": "x"})
    assert "aspectRatio" not in gpt.body and gpt.response_format == "b64_json"
    assert images_request({"model": "gpt-image-1", "prompt": "x", "response_format": "url"}).response_format == "url"
    assert images_request({"prompt": "x"}).response_format == "url"


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"style": "vivid"}, "style", "unknown_parameter"),
        ({"background": "transparent"}, "background", "unsupported_value"),
        ({"stream": True}, "stream", "unsupported_value"),
        ({"user": 42}, "user", "invalid_value"),
        ({"model": "no-such-model"}, "model", "model_not_found"),
        ({"model": 3}, "model", "invalid_value"),
        ({"model": "google/nano-banana-edit"}, "model", "invalid_value"),  # needs images: an edit model
        ({"n": 0}, "n", "invalid_value"),
        ({"n": 11}, "n", "invalid_value"),
        ({"n": True}, "n", "invalid_value"),
        ({"n": "2"}, "n", "invalid_value"),
        ({"n": 2}, "n", "invalid_value"),  # nano-banana-pro makes one image a request
        ({"model": "gpt-image-1", "n": 3}, "n", "invalid_value"),  # 1, 2 or 4
        ({"model": "google/imagen4-fast", "n": 5}, "n", "invalid_value"),  # 1 to 4
        ({"quality": "ultra"}, "quality", "invalid_value"),
        ({"quality": ["high"]}, "quality", "invalid_value"),
        ({"quality": "hd"}, "quality", "invalid_value"),  # nano-banana-pro has one quality
        ({"model": "gpt-image-1.5", "quality": "low"}, "quality", "invalid_value"),  # medium and high only
        ({"output_format": "webp"}, "output_format", "invalid_value"),
        ({"output_format": {"png": 1}}, "output_format", "invalid_value"),
        ({"model": "gpt-image-1", "output_format": "png"}, "output_format", "invalid_value"),  # one format
        ({"response_format": "file"}, "response_format", "invalid_value"),
    ],
)
def test_a_parameter_a_model_cannot_honour_is_a_400_naming_it(params: dict[str, Any], param: str, code: str) -> None:
    refused = refusal(images_request, {"prompt": "a cat"} | params)
    assert (refused.param, refused.code) == (param, code)


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({"model": "gpt-image-1", "n": 4}, {"numImages": 4}),
        ({"model": "google/imagen4-fast", "n": 3}, {"numImages": 3}),
        ({"n": 1}, {}),
        ({"model": "gpt-image-1.5", "quality": "hd"}, {"options": {"quality": "high"}}),
        ({"model": "gpt-image-1.5", "quality": "standard"}, {"options": {"quality": "medium"}}),
        ({"quality": "standard"}, {}),
        ({"quality": "auto"}, {}),
        ({"output_format": "jpeg"}, {"outputFormat": "jpg"}),  # nano-banana-pro spells it jpg
        ({"model": "google/nano-banana", "output_format": "jpeg"}, {"outputFormat": "jpeg"}),
        ({"background": "auto", "moderation": "auto", "stream": False, "user": "u-1"}, {}),
    ],
)
def test_parameters_become_the_models_own_fields(params: dict[str, Any], fields: dict[str, Any]) -> None:
    body = images_request({"prompt": "a cat"} | params).body
    assert {name: value for name, value in body.items() if name not in ("model", "prompt")} == fields
    validated(body)  # and the ordinary validation takes them


@pytest.mark.parametrize(
    ("model", "images", "mask", "param"),
    [
        ("gpt-image-1", 0, False, "image"),
        ("gpt-image-1", 6, False, "image"),  # the 4o Image API takes at most 5
        ("dall-e-3", 1, True, "mask"),  # nano-banana-pro takes no mask
        ("gpt-image-1", 2, True, "mask"),  # a mask applies to a single image
        ("google/imagen4", 1, False, "model"),  # takes no input images
    ],
)
def test_an_edit_the_model_cannot_make_is_a_400_naming_the_part(
    model: str, images: int, mask: bool, param: str
) -> None:
    assert refusal(images_request, {"model": model, "prompt": "x"}, edit=True, images=images, mask=mask).param == param


def test_an_edit_with_its_images_and_mask_is_an_ordinary_request() -> None:
    asked = images_request({"model": "gpt-image-1", "prompt": "x"}, edit=True, images=1, mask=True)
    payload = validated(asked.with_images(["https://a.example/1.png"], "https://a.example/m.png")).payload
    assert (payload["filesUrl"], payload["maskUrl"]) == (["https://a.example/1.png"], "https://a.example/m.png")


def test_validation_refusals_name_the_openai_parameter() -> None:
    assert refusal(validated, images_request({"prompt": "  "}).body).param == "prompt"
    assert refusal(validated, images_request({"prompt": "x" * 10001}).body).param == "prompt"
    assert refusal(validated, images_request({}).body).message == "Prompt is required"


def test_form_fields_read_as_json_values() -> None:
    assert form_params({"n": "2", "stream": "false", "prompt": "7"}) == {"n": 2, "stream": False, "prompt": "7"}
    assert form_params({"n": "two", "stream": "yes"}) == {"n": "two", "stream": "yes"}  # refused later, by name


STATUS = {"taskId": "ih_1", "createdAt": "2026-11-22T01:00:00+00:00", "imageUrls": ["https://a/0.png"]}


def test_a_finished_task_is_answered_with_urls_or_base64() -> None:
    assert images_answer(STATUS, None) == {"created": 1795309200, "data": [{"url": "https://a/0.png"}]}
    assert images_answer(STATUS, ["QUJD"]) == {"created": 1795309200, "data": [{"b64_json": "QUJD"}]}
    assert unfinished(STATUS | {"state": "success"}, 300) is None


def test_a_task_that_did_not_succeed_is_a_server_error() -> None:
    failed = unfinished(STATUS | {"state": "fail", "failMsg": "Content policy violation"}, 300)
    assert failed is not None and (failed.status, failed.code) == (500, "generation_failed")
    assert failed.message == "Image generation failed: Content policy violation"
    late = unfinished(STATUS | {"state": "processing", "failMsg": None}, 300)
    assert late is not None and (late.status, late.code) == (504, "timeout") and "ih_1" in late.message


@pytest.mark.parametrize(
    ("status", "answered", "kind", "code", "no_retry"),
    [
        (400, 400, "invalid_request_error", None, False),
        (401, 401, "invalid_request_error", "invalid_api_key", False),
        (402, 429, "insufficient_quota", "insufficient_quota", True),  # a spent budget: OpenAI's quota answer
        (404, 404, "invalid_request_error", None, False),
        (409, 409, "invalid_request_error", None, True),
        (413, 413, "invalid_request_error", None, False),
        (429, 429, "requests", "rate_limit_exceeded", False),
        (500, 500, "server_error", None, False),
        (503, 503, "server_error", None, False),
    ],
)
def test_errors_take_openais_shape_and_status(
    status: int, answered: int, kind: str, code: str | None, no_retry: bool
) -> None:
    got, body, headers = error_answer(status, "what went wrong", param=None)
    assert got == answered
    assert body == {"error": {"message": "what went wrong", "type": kind, "param": None, "code": code}}
    assert (headers.get("x-should-retry") == "false") is no_retry


def encoded(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    return encoded(image, "PNG")


IMAGE = png_bytes(Image.new("RGB", (40, 30), (10, 200, 10)))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_a_mask_is_black_where_it_was_transparent_and_white_elsewhere(mode: str) -> None:
    mask = Image.new("RGBA", (40, 30), (255, 255, 255, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 10, 30))
    if mode != "RGBA":
        mask = mask.convert(mode)
    redrawn = Image.open(io.BytesIO(black_where_transparent(png_bytes(mask), IMAGE)))
    assert redrawn.format == "PNG" and redrawn.size == (40, 30)
    assert {redrawn.getpixel((x, 15)) for x in range(10)} == {0}
    assert {redrawn.getpixel((x, 15)) for x in range(10, 40)} == {255}


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (png_bytes(Image.new("RGB", (40, 30))), "mask must have an alpha channel"),
        (png_bytes(Image.new("RGBA", (20, 30))), "mask is 20x30 pixels; it must be the image's size, 40x30"),
        (encoded(Image.new("RGB", (40, 30)), "JPEG"), "mask must be a PNG image"),
    ],
)
def test_a_mask_that_cannot_mark_the_image_is_refused(mask: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match="^" + message):
        black_where_transparent(mask, IMAGE)
