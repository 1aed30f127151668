"""parse_generate: what a client's generate body becomes upstream, and how a bad one is refused.

Limits and enums below are written out from Kie's model docs (kie-api-facts §3) rather than read
back from app.providers.kie_models, so a wrong table entry fails here instead of agreeing with itself.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.errors import BadRequest
from app.validation import parse_generate

URL = "https://cdn.example.com/a.png"
PRO, NB2, BANANA, EDIT = "nano-banana-pro", "nano-banana-2", "google/nano-banana", "google/nano-banana-edit"
PROMPT_MAX = {PRO: 10000, NB2: 20000, BANANA: 5000, EDIT: 5000}
IMAGES_MAX = {PRO: 8, NB2: 14, EDIT: 10}
IMAGE_FIELD = {PRO: "image_input", NB2: "image_input", EDIT: "image_urls"}


def body_for(model: str, **fields: Any) -> dict[str, Any]:
    """A valid body for `model` (the edit model needs an image), overridden by `fields`."""
    body: dict[str, Any] = {"prompt": "a cat", "model": model}
    if model == EDIT:
        body["imageInput"] = [URL]
    return body | fields


def rejection(body: Any) -> str:
    with pytest.raises(BadRequest) as raised:
        parse_generate(body)
    assert raised.value.status == 400
    return raised.value.message


# --- accepted requests --------------------------------------------------------------------------


def test_prompt_alone_goes_to_nano_banana_pro_with_gateway_defaults():
    submission = parse_generate({"prompt": "x"})

    assert submission.payload == {
        "model": "nano-banana-pro",
        "input": {"prompt": "x", "aspect_ratio": "16:9", "resolution": "2K", "output_format": "png", "image_input": []},
    }


def test_google_nano_banana_gets_no_resolution_and_no_image_field():
    submission = parse_generate({"prompt": "x", "model": BANANA})

    assert submission.payload == {
        "model": BANANA,
        "input": {"prompt": "x", "aspect_ratio": "16:9", "output_format": "png"},
    }


def test_google_nano_banana_accepts_an_empty_image_list():
    assert "image_urls" not in parse_generate({"prompt": "x", "model": BANANA, "imageInput": []}).input


def test_nano_banana_edit_sends_image_input_as_image_urls():
    urls = [URL, "http://other.example.org:8080/b.jpg?sig=1"]

    submission = parse_generate({"prompt": "x", "model": EDIT, "imageInput": urls})

    assert submission.payload == {
        "model": EDIT,
        "input": {"prompt": "x", "aspect_ratio": "16:9", "output_format": "png", "image_urls": urls},
    }


def test_nano_banana_2_takes_a_20000_character_prompt_and_14_images():
    urls = [f"https://cdn.example.com/{i}.png" for i in range(14)]

    submission = parse_generate({"prompt": "p" * 20000, "model": NB2, "imageInput": urls})

    assert submission.model.name == NB2
    assert len(submission.input["prompt"]) == 20000
    assert submission.input["image_input"] == urls


@pytest.mark.parametrize(
    ("model", "field", "value", "input_name"),
    [
        (PRO, "aspectRatio", "21:9", "aspect_ratio"),
        (PRO, "aspectRatio", "auto", "aspect_ratio"),
        (PRO, "resolution", "4K", "resolution"),
        (PRO, "outputFormat", "jpg", "output_format"),
        (NB2, "aspectRatio", "1:8", "aspect_ratio"),
        (NB2, "resolution", "1K", "resolution"),
        (BANANA, "outputFormat", "jpeg", "output_format"),
        (EDIT, "aspectRatio", "9:16", "aspect_ratio"),
    ],
)
def test_client_choice_is_sent_under_kie_field_name(model, field, value, input_name):
    assert parse_generate(body_for(model, **{field: value})).input[input_name] == value


@pytest.mark.parametrize("field", ["aspectRatio", "resolution", "outputFormat", "imageInput", "model"])
def test_explicit_null_means_the_default(field):
    assert parse_generate({"prompt": "x", field: None}) == parse_generate({"prompt": "x"})


# --- prompt -------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [{}, {"prompt": None}, {"prompt": ""}, {"prompt": "   "}, {"prompt": " \n\t "}])
def test_missing_or_blank_prompt_is_required(body):
    assert rejection(body) == "Prompt is required"


@pytest.mark.parametrize("prompt", [123, 1.5, True, ["a cat"], {"text": "a cat"}])
def test_non_string_prompt_is_refused(prompt):
    assert rejection({"prompt": prompt}) == "prompt must be a string"


@pytest.mark.parametrize(("model", "limit"), PROMPT_MAX.items())
def test_prompt_at_the_model_limit_passes(model, limit):
    assert parse_generate(body_for(model, prompt="p" * limit)).input["prompt"] == "p" * limit


@pytest.mark.parametrize(("model", "limit"), PROMPT_MAX.items())
def test_prompt_one_over_the_model_limit_names_model_and_limit(model, limit):
    message = rejection(body_for(model, prompt="p" * (limit + 1)))

    assert message == f"prompt is too long for model {model}: {limit + 1} characters, maximum {limit}"


# --- model --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["dall-e-3", "Nano-Banana-Pro", "nano-banana", ""])
def test_unknown_model_is_named_and_supported_models_listed(model):
    message = rejection({"prompt": "x", "model": model})

    assert message.startswith(f"Unknown model '{model}'; supported models: ")
    for supported in PROMPT_MAX:
        assert supported in message


@pytest.mark.parametrize("model", [1, ["nano-banana-pro"], {"name": "nano-banana-pro"}, False])
def test_non_string_model_is_refused(model):
    assert rejection({"prompt": "x", "model": model}) == "model must be a string"


# --- enumerated choices -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (PRO, "aspectRatio", "1:4"),  # only nano-banana-2 has it
        (PRO, "aspectRatio", "7:5"),
        (PRO, "resolution", "8K"),
        (PRO, "resolution", "2k"),
        (PRO, "outputFormat", "jpeg"),  # Kie spells it jpg for this model
        (PRO, "outputFormat", "webp"),
        (NB2, "aspectRatio", "2:1"),
        (NB2, "resolution", "HD"),
        (BANANA, "outputFormat", "jpg"),  # and jpeg for this one
        (BANANA, "aspectRatio", "1:8"),
        (EDIT, "aspectRatio", ""),
    ],
)
def test_value_outside_model_enum_names_field_value_and_model(model, field, value):
    message = rejection(body_for(model, **{field: value}))

    assert message.startswith(f"{field} '{value}' is not supported by model {model}; choose one of: ")


@pytest.mark.parametrize("model", [BANANA, EDIT])
def test_resolution_is_refused_by_models_without_it(model):
    assert rejection(body_for(model, resolution="2K")) == f"resolution is not supported by model {model}"


@pytest.mark.parametrize("field", ["aspectRatio", "resolution", "outputFormat"])
@pytest.mark.parametrize("value", [16, ["16:9"], False])
def test_non_string_choice_is_refused(field, value):
    assert rejection({"prompt": "x", field: value}) == f"{field} must be a string"


# --- imageInput ---------------------------------------------------------------------------------


@pytest.mark.parametrize("images", [URL, {"url": URL}, 5, True])
def test_image_input_that_is_not_a_list_is_refused(images):
    assert rejection({"prompt": "x", "imageInput": images}) == "imageInput must be an array of URL strings"


@pytest.mark.parametrize("images", [[URL, 3], [None], [[URL]], [{"url": URL}]])
def test_image_input_with_non_string_entries_is_refused(images):
    assert rejection({"prompt": "x", "imageInput": images}) == "imageInput must be an array of URL strings"


@pytest.mark.parametrize(("model", "limit"), IMAGES_MAX.items())
def test_image_count_at_the_model_limit_passes(model, limit):
    urls = [f"https://cdn.example.com/{i}.png" for i in range(limit)]

    assert parse_generate(body_for(model, imageInput=urls)).input[IMAGE_FIELD[model]] == urls


@pytest.mark.parametrize(("model", "limit"), IMAGES_MAX.items())
def test_one_image_over_the_model_limit_is_refused(model, limit):
    urls = [f"https://cdn.example.com/{i}.png" for i in range(limit + 1)]

    message = rejection(body_for(model, imageInput=urls))

    assert message == f"imageInput has {limit + 1} images; model {model} accepts at most {limit}"


def test_images_sent_to_a_text_only_model_are_refused():
    message = rejection({"prompt": "x", "model": BANANA, "imageInput": [URL]})

    assert message == f"imageInput is not supported by model {BANANA}"


@pytest.mark.parametrize("images", ["omitted", None, []])
def test_edit_model_needs_an_image(images):
    body = {"prompt": "x", "model": EDIT}
    if images != "omitted":
        body["imageInput"] = images

    assert rejection(body) == f"imageInput needs at least one image URL for model {EDIT}"


@pytest.mark.parametrize(
    "bad_url",
    [
        "/images/a.png",
        "images/a.png",
        "//cdn.example.com/a.png",
        "ftp://cdn.example.com/a.png",
        "file:///etc/passwd",
        "http://",
        "https:///a.png",
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "https://cdn.example.com/a b.png",
        " https://cdn.example.com/a.png",
        "https://cdn.example.com/a.png\n",
        "http://[::1",
        "",
    ],
)
@pytest.mark.parametrize("model", [PRO, EDIT])
def test_non_absolute_http_url_is_refused_by_index(model, bad_url):
    message = rejection(body_for(model, imageInput=[URL, bad_url]))

    assert message == "imageInput[1] must be an absolute http(s) URL"


@pytest.mark.parametrize(
    "good_url",
    ["http://example.com/a.png", "HTTPS://EXAMPLE.COM/A.PNG", "https://user@cdn.example.com:8443/a.png?x=1#f"],
)
def test_absolute_http_urls_are_accepted(good_url):
    assert parse_generate({"prompt": "x", "imageInput": [good_url]}).input["image_input"] == [good_url]


# --- body shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["callBackUrl", "image_input", "aspect_ratio", "n", "Prompt"])
def test_unknown_top_level_field_is_named(field):
    assert rejection({"prompt": "x", field: "anything"}) == f"Unknown field '{field}'"


@pytest.mark.parametrize("body", [[], [{"prompt": "x"}], "a cat", None, 42, True])
def test_body_that_is_not_an_object_is_refused(body):
    assert rejection(body) == "Request body must be a JSON object"
