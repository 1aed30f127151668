"""parse_generate: what a client's generate body becomes upstream, and how a bad one is refused.

Per-model limits, defaults and quirks below are written out from the providers' docs (kie-api-facts §3, §4, §8)
rather than read back from app.providers.catalogue, so a wrong table entry fails here instead of agreeing with itself.
The table is read only to make sure every model gets the generic checks.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.errors import BadRequest
from app.providers.catalogue import MODELS
from app.tasks.validation import COMMON_FIELDS, parse_generate

URL = "https://cdn.example.com/a.png"
PRO, NB2, BANANA, EDIT = "nano-banana-pro", "nano-banana-2", "google/nano-banana", "google/nano-banana-edit"
SEEDREAM_V4, SEEDREAM_V4_EDIT = "bytedance/seedream-v4-text-to-image", "bytedance/seedream-v4-edit"
SEEDREAM_45, SEEDREAM_45_EDIT = "seedream/4.5-text-to-image", "seedream/4.5-edit"
IMAGEN4, IMAGEN4_ULTRA, IMAGEN4_FAST = "google/imagen4", "google/imagen4-ultra", "google/imagen4-fast"
IDEOGRAM, CHARACTER = "ideogram/v3-text-to-image", "ideogram/character"
FLUX2_PRO, FLUX2_FLEX = "flux-2/pro-text-to-image", "flux-2/flex-text-to-image"
FLUX2_PRO_I2I, FLUX2_FLEX_I2I = "flux-2/pro-image-to-image", "flux-2/flex-image-to-image"
GPT_IMAGE, GPT_IMAGE_I2I = "gpt-image/1.5-text-to-image", "gpt-image/1.5-image-to-image"
QWEN, QWEN_EDIT = "qwen/text-to-image", "qwen/image-edit"
GPT4O, KONTEXT_PRO, KONTEXT_MAX = "gpt4o-image", "flux-kontext-pro", "flux-kontext-max"
KVID_T2I, KVID_I2I = "kvid/text-to-image", "kvid/image-to-image"

# Models that must be given an image (their image field is required upstream).
NEEDS_IMAGE = {
    EDIT,
    SEEDREAM_V4_EDIT,
    SEEDREAM_45_EDIT,
    CHARACTER,
    FLUX2_PRO_I2I,
    FLUX2_FLEX_I2I,
    GPT_IMAGE_I2I,
    QWEN_EDIT,
    KVID_I2I,
}
# Which API reaches each model that is not on Kie's market jobs API.
NOT_MARKET = {GPT4O: "4o", KONTEXT_PRO: "flux-kontext", KONTEXT_MAX: "flux-kontext", KVID_T2I: "kvid", KVID_I2I: "kvid"}
ALL_MODELS = sorted(MODELS)
IMAGE_FIELDS = {
    "image_input",
    "image_urls",
    "reference_image_urls",
    "input_urls",
    "image_url",
    "filesUrl",
    "inputImage",
}


def body_for(model: str, **fields: Any) -> dict[str, Any]:
    """A minimal valid body for `model` (one image when the model needs one), overridden by `fields`."""
    body: dict[str, Any] = {"prompt": "a cat", "model": model}
    if model in NEEDS_IMAGE:
        body["imageInput"] = [URL]
    return body | fields


def sent(model: str, **fields: Any) -> dict[str, Any]:
    """The upstream fields (market `input`, or the flat body of the other APIs) for a valid request."""
    payload = parse_generate(body_for(model, **fields)).payload
    return payload["input"] if "input" in payload else payload


def rejection(body: Any) -> str:
    with pytest.raises(BadRequest) as raised:
        parse_generate(body)
    assert raised.value.status == 400
    return raised.value.message


def urls(count: int) -> list[str]:
    return [f"https://cdn.example.com/{i}.png" for i in range(count)]


# --- every model: a minimal request, and the body shape of its API -------------------------------


def test_every_model_is_offered():
    assert set(MODELS) == {
        *(PRO, NB2, BANANA, EDIT, SEEDREAM_V4, SEEDREAM_V4_EDIT, SEEDREAM_45, SEEDREAM_45_EDIT),
        *(IMAGEN4, IMAGEN4_ULTRA, IMAGEN4_FAST, IDEOGRAM, CHARACTER, FLUX2_PRO, FLUX2_FLEX, FLUX2_PRO_I2I),
        *(FLUX2_FLEX_I2I, GPT_IMAGE, GPT_IMAGE_I2I, QWEN, QWEN_EDIT, GPT4O, KONTEXT_PRO, KONTEXT_MAX),
        *(KVID_T2I, KVID_I2I),
    }


@pytest.mark.parametrize("name", ALL_MODELS)
def test_minimal_request_is_accepted_in_the_body_shape_of_the_models_api(name):
    submission = parse_generate(body_for(name))
    payload = submission.payload

    assert submission.model is MODELS[name]
    api = NOT_MARKET.get(name, "market")
    assert submission.model.api.name == api
    if api == "market":  # {"model": ..., "input": {...}}
        assert set(payload) == {"model", "input"}
        assert payload["model"] == name
        upstream = payload["input"]
    elif api == "flux-kontext":  # flat, and still names the model
        assert payload["model"] == name
        assert "input" not in payload
        upstream = payload
    else:  # 4o and kvid: flat, no model
        assert "model" not in payload and "input" not in payload
        upstream = payload
    assert upstream["prompt"] == "a cat"
    assert "callBackUrl" not in upstream and "callBackUrl" not in payload


@pytest.mark.parametrize("name", ALL_MODELS)
def test_image_field_is_sent_only_when_images_are_given(name):
    upstream = sent(name)
    present = IMAGE_FIELDS & set(upstream)
    if name in NEEDS_IMAGE:
        assert [upstream[field] for field in present] in ([URL], [[URL]])
    else:
        assert present == set()  # in particular no `image_input: []`
        assert sent(name, imageInput=[]) == upstream


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (PRO, {"prompt": "a cat", "aspect_ratio": "16:9", "resolution": "2K", "output_format": "png"}),  # the seed's
        (NB2, {"prompt": "a cat", "aspect_ratio": "auto", "resolution": "1K", "output_format": "jpg"}),
        (BANANA, {"prompt": "a cat", "aspect_ratio": "1:1", "output_format": "png"}),
        (EDIT, {"prompt": "a cat", "aspect_ratio": "1:1", "output_format": "png", "image_urls": [URL]}),
        (SEEDREAM_V4, {"prompt": "a cat", "image_size": "square_hd", "image_resolution": "1K"}),
        (SEEDREAM_45, {"prompt": "a cat", "aspect_ratio": "1:1", "quality": "basic"}),
        (IMAGEN4, {"prompt": "a cat", "aspect_ratio": "1:1"}),
        (IMAGEN4_FAST, {"prompt": "a cat", "aspect_ratio": "16:9"}),
        (CHARACTER, {"prompt": "a cat", "image_size": "square_hd", "reference_image_urls": [URL]}),
        (FLUX2_PRO, {"prompt": "a cat", "aspect_ratio": "1:1", "resolution": "1K"}),
        (FLUX2_FLEX_I2I, {"prompt": "a cat", "aspect_ratio": "auto", "resolution": "1K", "input_urls": [URL]}),
        (QWEN_EDIT, {"prompt": "a cat", "image_size": "landscape_4_3", "output_format": "png", "image_url": URL}),
        (GPT4O, {"prompt": "a cat", "size": "1:1", "nVariants": 1}),
        (KONTEXT_PRO, {"prompt": "a cat", "outputFormat": "jpeg", "model": KONTEXT_PRO}),
        (KVID_T2I, {"prompt": "a cat", "aspect_ratio": "1:1", "output_format": "jpeg"}),
        (KVID_I2I, {"prompt": "a cat", "aspect_ratio": "1:1", "output_format": "jpeg", "image_url": URL}),
    ],
)
def test_minimal_request_sends_the_models_documented_defaults(name, expected):
    assert sent(name) == expected


def test_prompt_alone_goes_to_nano_banana_pro_with_the_seed_gateways_defaults_and_no_image_field():
    assert parse_generate({"prompt": "x"}).payload == {
        "model": PRO,
        "input": {"prompt": "x", "aspect_ratio": "16:9", "resolution": "2K", "output_format": "png"},
    }


@pytest.mark.parametrize("name", [GPT_IMAGE, GPT_IMAGE_I2I])
def test_gpt_image_is_sent_its_required_quality_by_default(name):
    assert sent(name)["quality"] == "medium"


@pytest.mark.parametrize("field", ["aspectRatio", "resolution", "outputFormat", "imageInput", "model", "options"])
def test_explicit_null_means_the_default(field):
    assert parse_generate({"prompt": "x", field: None}) == parse_generate({"prompt": "x"})


# --- every model: fields, options and images it does not take -------------------------------------

PLAUSIBLE = {
    "aspectRatio": "1:1",
    "resolution": "1K",
    "outputFormat": "png",
    "negativePrompt": "blurry",
    "seed": 1,
    "numImages": 1,
}
UNSUPPORTED_FIELDS = [
    pytest.param(name, field, id=f"{name}-{field}")
    for name, spec in sorted(MODELS.items())
    for field in COMMON_FIELDS
    if field not in spec.fields
]


@pytest.mark.parametrize(("name", "field"), UNSUPPORTED_FIELDS)
def test_field_the_model_does_not_take_is_refused_naming_field_and_model(name, field):
    assert rejection(body_for(name, **{field: PLAUSIBLE[field]})) == f"{field} is not supported by model {name}"


@pytest.mark.parametrize(
    ("name", "field"),
    [
        (BANANA, "resolution"),
        (EDIT, "resolution"),
        (IDEOGRAM, "numImages"),  # Kie's ideogram/v3 spec has no num_images
        (IMAGEN4, "numImages"),
        (SEEDREAM_45, "seed"),
        (GPT4O, "outputFormat"),
        (KONTEXT_PRO, "numImages"),
        (KVID_T2I, "resolution"),
    ],
)
def test_documented_missing_fields_are_refused(name, field):
    assert rejection(body_for(name, **{field: PLAUSIBLE[field]})) == f"{field} is not supported by model {name}"


@pytest.mark.parametrize("name", [name for name, spec in sorted(MODELS.items()) if spec.images is None])
def test_images_sent_to_a_text_only_model_are_refused(name):
    assert rejection(body_for(name, imageInput=[URL])) == f"imageInput is not supported by model {name}"


@pytest.mark.parametrize("options", [["nsfw_checker"], "nsfw_checker=true", 1, True])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_options_that_are_not_an_object_are_refused(name, options):
    assert rejection(body_for(name, options=options)) == "options must be an object"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_unknown_option_is_refused_listing_the_models_options(name):
    supported = ", ".join(MODELS[name].options) or "none"

    message = rejection(body_for(name, options={"foo": 1}))

    assert message == f"options.foo is not supported by model {name}; supported options: {supported}"


@pytest.mark.parametrize(
    ("name", "supported"),
    [
        (BANANA, "nsfw_checker"),
        (NB2, "google_search"),
        (SEEDREAM_45, "none"),
        (PRO, "none"),
        (GPT4O, "maskUrl, isEnhance, enableFallback, fallbackModel, uploadCn"),
    ],
)
def test_unknown_option_message_lists_the_documented_options(name, supported):
    message = rejection(body_for(name, options={"n": 2}))

    assert message == f"options.n is not supported by model {name}; supported options: {supported}"


@pytest.mark.parametrize(
    ("name", "options", "upstream"),
    [
        (NB2, {"google_search": True}, {"google_search": True}),
        (BANANA, {"nsfw_checker": False}, {"nsfw_checker": False}),
        (IDEOGRAM, {"rendering_speed": "TURBO", "style": "DESIGN"}, {"rendering_speed": "TURBO", "style": "DESIGN"}),
        (
            QWEN,
            {"guidance_scale": 2.5, "num_inference_steps": 250},
            {"guidance_scale": 2.5, "num_inference_steps": 250},
        ),
        (GPT_IMAGE, {"quality": "high"}, {"quality": "high"}),
        (KONTEXT_PRO, {"promptUpsampling": True, "watermark": "ih"}, {"promptUpsampling": True, "watermark": "ih"}),
        (BANANA, {"nsfw_checker": None}, {}),  # a null option is left out
    ],
)
def test_options_are_sent_under_the_providers_names(name, options, upstream):
    assert sent(name, options=options) == sent(name) | upstream


# --- per-model quirks (kie-api-facts §3, §4, §8) -----------------------------------------------


@pytest.mark.parametrize(
    ("name", "fields", "upstream"),
    [
        # seedream v4 takes image_size presets; ratios are translated, preset names pass through
        (SEEDREAM_V4, {"aspectRatio": "16:9"}, {"image_size": "landscape_16_9"}),
        (SEEDREAM_V4, {"aspectRatio": "9:16"}, {"image_size": "portrait_16_9"}),
        (SEEDREAM_V4, {"aspectRatio": "1:1"}, {"image_size": "square_hd"}),
        (SEEDREAM_V4, {"aspectRatio": "21:9"}, {"image_size": "landscape_21_9"}),
        (SEEDREAM_V4, {"aspectRatio": "portrait_3_2"}, {"image_size": "portrait_3_2"}),
        (SEEDREAM_V4_EDIT, {"aspectRatio": "square"}, {"image_size": "square"}),
        (SEEDREAM_V4, {"resolution": "4K", "numImages": 6}, {"image_resolution": "4K", "max_images": 6}),
        (SEEDREAM_V4, {"seed": 7}, {"seed": 7}),
        # seedream 4.5 says quality basic/high for 2K/4K
        (SEEDREAM_45, {"resolution": "2K"}, {"quality": "basic"}),
        (SEEDREAM_45_EDIT, {"resolution": "4K"}, {"quality": "high"}),
        # imagen4 wants the seed as a string, imagen4-fast as an integer, and num_images as a string
        (IMAGEN4, {"seed": 42}, {"seed": "42"}),
        (IMAGEN4_ULTRA, {"seed": 42}, {"seed": "42"}),
        (IMAGEN4_FAST, {"seed": 42}, {"seed": 42}),
        (IMAGEN4_FAST, {"numImages": 2}, {"num_images": "2"}),
        (IMAGEN4, {"negativePrompt": "blurry"}, {"negative_prompt": "blurry"}),
        (CHARACTER, {"numImages": 4}, {"num_images": "4"}),
        (IDEOGRAM, {"aspectRatio": "landscape_16_9"}, {"image_size": "landscape_16_9"}),
        (QWEN_EDIT, {"numImages": 3}, {"num_images": "3"}),
        # the nano-banana family spells jpeg differently per model
        (PRO, {"outputFormat": "jpg"}, {"output_format": "jpg"}),
        (NB2, {"aspectRatio": "1:8", "resolution": "4K"}, {"aspect_ratio": "1:8", "resolution": "4K"}),
        (BANANA, {"outputFormat": "jpeg", "aspectRatio": "auto"}, {"output_format": "jpeg", "aspect_ratio": "auto"}),
        (FLUX2_FLEX, {"aspectRatio": "auto", "resolution": "2K"}, {"aspect_ratio": "auto", "resolution": "2K"}),
        # gpt4o: size and nVariants
        (GPT4O, {"numImages": 4}, {"nVariants": 4}),
        (GPT4O, {"numImages": 2, "aspectRatio": "2:3"}, {"nVariants": 2, "size": "2:3"}),
        # flux kontext: flat camelCase fields
        (KONTEXT_MAX, {"aspectRatio": "21:9", "outputFormat": "png"}, {"aspectRatio": "21:9", "outputFormat": "png"}),
        # kvid
        (KVID_T2I, {"numImages": 4, "seed": 5}, {"num_images": 4, "seed": 5}),
        (KVID_T2I, {"negativePrompt": "x"}, {"negative_prompt": "x"}),
        (KVID_T2I, {"options": {"guidance_scale": 7.5}}, {"guidance_scale": 7.5}),
        (KVID_T2I, {"options": {"num_inference_steps": 50}}, {"num_inference_steps": 50}),
    ],
)
def test_client_values_become_the_models_upstream_fields(name, fields, upstream):
    assert sent(name, **fields) == sent(name) | upstream


PRO_RATIOS = "1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9, auto"
NB2_RATIOS = "auto, 1:1, 1:4, 1:8, 2:3, 3:2, 3:4, 4:1, 4:3, 4:5, 5:4, 8:1, 9:16, 16:9, 21:9"


@pytest.mark.parametrize(
    ("name", "field", "value", "rule"),
    [
        (PRO, "aspectRatio", "1:4", f"must be one of: {PRO_RATIOS}"),  # only nano-banana-2 has it
        (PRO, "aspectRatio", 16, f"must be one of: {PRO_RATIOS}"),
        (PRO, "resolution", "2k", "must be one of: 1K, 2K, 4K"),
        (PRO, "outputFormat", "jpeg", "must be one of: png, jpg"),
        (BANANA, "outputFormat", "jpg", "must be one of: png, jpeg"),
        (NB2, "aspectRatio", "2:1", f"must be one of: {NB2_RATIOS}"),
        (SEEDREAM_V4, "numImages", 0, "must be between 1 and 6"),
        (SEEDREAM_45, "resolution", "1K", "must be one of: 2K, 4K"),
        (SEEDREAM_45, "resolution", "basic", "must be one of: 2K, 4K"),  # Kie's spelling is not a client value
        (IMAGEN4_FAST, "numImages", 5, "must be between 1 and 4"),
        (IMAGEN4_FAST, "numImages", "2", "must be an integer between 1 and 4"),  # a number, though Kie gets "2"
        (CHARACTER, "numImages", 2.0, "must be an integer between 1 and 4"),
        (GPT4O, "numImages", 3, "must be one of: 1, 2, 4"),
        (GPT4O, "numImages", True, "must be one of: 1, 2, 4"),
        (GPT4O, "aspectRatio", "16:9", "must be one of: 1:1, 3:2, 2:3"),
        (KONTEXT_PRO, "aspectRatio", "3:2", "must be one of: 21:9, 16:9, 4:3, 1:1, 3:4, 9:16"),
        (KONTEXT_PRO, "options.safetyTolerance", 7, "must be between 0 and 6"),
        (KONTEXT_MAX, "options.safetyTolerance", -1, "must be between 0 and 6"),
        (KVID_T2I, "options.guidance_scale", 7, "must be one of: 3, 5, 7.5, 10"),
        (KVID_T2I, "options.num_inference_steps", 25, "must be one of: 20, 30, 40, 50"),
        (KVID_T2I, "numImages", True, "must be an integer between 1 and 4"),
        (KVID_I2I, "numImages", 5, "must be between 1 and 4"),
        (KVID_T2I, "outputFormat", "webp", "must be one of: jpeg, png"),
        (QWEN, "negativePrompt", 7, "must be a string"),
        (BANANA, "options.nsfw_checker", "yes", "must be true or false"),
        (CHARACTER, "options.style", "GENERAL", "must be one of: AUTO, REALISTIC, FICTION"),
        (IDEOGRAM, "options.rendering_speed", "FAST", "must be one of: TURBO, BALANCED, QUALITY"),
        (QWEN_EDIT, "options.num_inference_steps", 50, "must be between 2 and 49"),
        (QWEN, "options.guidance_scale", 20.5, "must be between 0 and 20"),
        (GPT4O, "options.maskUrl", "/mask.png", "must be an absolute http(s) URL"),
        (GPT4O, "options.fallbackModel", "DALL_E", "must be one of: GPT_IMAGE_1, FLUX_MAX"),
    ],
)
def test_value_the_model_does_not_take_is_refused_naming_field_value_model_and_rule(name, field, value, rule):
    if field.startswith("options."):
        body = body_for(name, options={field.removeprefix("options."): value})
    else:
        body = body_for(name, **{field: value})
    shown = json.dumps(value).replace('"', "'")

    assert rejection(body) == f"{field} {shown} is not valid for model {name}: {rule}"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            body_for(PRO, aspectRatio="7:3"),
            f"aspectRatio '7:3' is not valid for model nano-banana-pro: must be one of: {PRO_RATIOS}",
        ),
        (
            body_for(SEEDREAM_V4, numImages=9),
            "numImages 9 is not valid for model bytedance/seedream-v4-text-to-image: must be between 1 and 6",
        ),
        (
            body_for(SEEDREAM_V4, numImages=True),
            "numImages true is not valid for model bytedance/seedream-v4-text-to-image: "
            "must be an integer between 1 and 6",
        ),
        (
            body_for(PRO, aspectRatio=False),
            f"aspectRatio false is not valid for model nano-banana-pro: must be one of: {PRO_RATIOS}",
        ),
    ],
)
def test_refusal_messages_read_as_documented(body, message):
    assert rejection(body) == message


@pytest.mark.parametrize(("name", "ratio"), [(SEEDREAM_V4, "5:4"), (IDEOGRAM, "3:2"), (QWEN, "21:9")])
def test_preset_models_refuse_a_ratio_without_a_preset_and_list_ratios_and_presets(name, ratio):
    message = rejection(body_for(name, aspectRatio=ratio))

    assert message.startswith(f"aspectRatio '{ratio}' is not valid for model {name}: must be one of: ")
    assert "16:9" in message and "landscape_16_9" in message


def test_seed_out_of_range_states_the_real_maximum():
    message = rejection(body_for(SEEDREAM_V4, seed=-1))

    assert message == f"seed -1 is not valid for model {SEEDREAM_V4}: must be between 0 and 2147483647"


@pytest.mark.parametrize("value", [["16:9"], {"ratio": "16:9"}])
def test_list_or_object_where_a_choice_is_expected_is_a_bad_request(value):
    assert rejection(body_for(PRO, aspectRatio=value)).startswith("aspectRatio ")


def test_a_long_bad_value_is_shortened_in_the_message():
    message = rejection(body_for(PRO, aspectRatio="x" * 500))

    assert message.startswith("aspectRatio '" + "x" * 36 + "... is not valid for model nano-banana-pro: ")
    assert len(message) < 200


def test_negative_prompt_over_the_models_limit_is_refused():
    assert sent(QWEN, negativePrompt="n" * 500)["negative_prompt"] == "n" * 500

    message = rejection(body_for(QWEN, negativePrompt="n" * 501))

    assert message.endswith(f"is not valid for model {QWEN}: must be at most 500 characters")


# --- prompt -------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [{}, {"prompt": None}, {"prompt": ""}, {"prompt": "   "}, {"prompt": " \n\t "}])
def test_missing_or_blank_prompt_is_required(body):
    assert rejection(body) == "Prompt is required"


@pytest.mark.parametrize("name", [n for n in ALL_MODELS if n != GPT4O])
def test_every_model_but_4o_needs_a_prompt_even_with_images(name):
    body = body_for(name)
    del body["prompt"]
    if MODELS[name].images is not None:
        body["imageInput"] = [URL]

    assert rejection(body) == "Prompt is required"


@pytest.mark.parametrize("prompt", [123, 1.5, True, ["a cat"], {"text": "a cat"}])
def test_non_string_prompt_is_refused(prompt):
    assert rejection({"prompt": prompt}) == "prompt must be a string"


PROMPT_MAX = {PRO: 10000, NB2: 20000, BANANA: 5000, SEEDREAM_45: 3000, QWEN: 5000, QWEN_EDIT: 2000, FLUX2_PRO: 5000}


@pytest.mark.parametrize(("name", "limit"), PROMPT_MAX.items())
def test_prompt_at_the_documented_limit_passes_and_one_more_is_refused(name, limit):
    assert sent(name, prompt="p" * limit)["prompt"] == "p" * limit

    message = rejection(body_for(name, prompt="p" * (limit + 1)))

    assert message == f"prompt is too long for model {name}: {limit + 1} characters, maximum {limit}"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_has_a_prompt_limit(name):
    limit = MODELS[name].prompt.max_length

    assert rejection(body_for(name, prompt="p" * (limit + 1))).startswith(f"prompt is too long for model {name}: ")


@pytest.mark.parametrize("name", [FLUX2_PRO, FLUX2_FLEX, FLUX2_PRO_I2I, FLUX2_FLEX_I2I])
def test_flux_2_needs_a_prompt_of_at_least_3_characters(name):
    assert sent(name, prompt="cat")["prompt"] == "cat"

    assert rejection(body_for(name, prompt="ct")) == f"prompt is too short for model {name}: 2 characters, minimum 3"


# --- gpt4o-image --------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["omitted", None, "", "  "])
def test_4o_takes_images_without_a_prompt(prompt):
    body: dict[str, Any] = {"model": GPT4O, "imageInput": [URL]}
    if prompt != "omitted":
        body["prompt"] = prompt

    assert parse_generate(body).payload == {"filesUrl": [URL], "size": "1:1", "nVariants": 1}


def test_4o_needs_a_prompt_or_an_image():
    assert rejection({"model": GPT4O}) == "Prompt is required"
    assert rejection({"model": GPT4O, "imageInput": []}) == "Prompt is required"


def test_4o_takes_up_to_5_files():
    assert sent(GPT4O, imageInput=urls(5))["filesUrl"] == urls(5)
    assert (
        rejection(body_for(GPT4O, imageInput=urls(6))) == "imageInput has 6 images; model gpt4o-image accepts at most 5"
    )


# --- flux kontext -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [KONTEXT_PRO, KONTEXT_MAX])
def test_flux_kontext_sends_jpeg_and_no_ratio_by_default_so_edits_keep_the_source_ratio(name):
    assert parse_generate(body_for(name)).payload == {"prompt": "a cat", "outputFormat": "jpeg", "model": name}


@pytest.mark.parametrize("name", [KONTEXT_PRO, KONTEXT_MAX])
def test_flux_kontext_takes_one_input_image_as_a_single_url(name):
    assert sent(name, imageInput=[URL])["inputImage"] == URL
    assert rejection(body_for(name, imageInput=urls(2))) == f"imageInput has 2 images; model {name} accepts at most 1"


def test_flux_kontext_safety_tolerance_up_to_6_is_sent():
    assert sent(KONTEXT_PRO, options={"safetyTolerance": 6})["safetyTolerance"] == 6


# --- model --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["dall-e-3", "Nano-Banana-Pro", "nano-banana", "kvid", ""])
def test_unknown_model_is_named_and_discovery_pointed_to(model):
    message = rejection({"prompt": "x", "model": model})

    assert message == f"Unknown model '{model}'; GET /api/images/models lists the supported models"


@pytest.mark.parametrize("model", [1, ["nano-banana-pro"], {"name": "nano-banana-pro"}, False])
def test_non_string_model_is_refused(model):
    assert rejection({"prompt": "x", "model": model}) == "model must be a string"


# --- imageInput ---------------------------------------------------------------------------------


@pytest.mark.parametrize("images", [URL, {"url": URL}, 5, True])
def test_image_input_that_is_not_a_list_is_refused(images):
    assert rejection({"prompt": "x", "imageInput": images}) == "imageInput must be an array of URL strings"


@pytest.mark.parametrize("images", [[URL, 3], [None], [[URL]], [{"url": URL}]])
def test_image_input_with_non_string_entries_is_refused(images):
    assert rejection({"prompt": "x", "imageInput": images}) == "imageInput must be an array of URL strings"


IMAGES_MAX = {
    PRO: ("image_input", 8),
    NB2: ("image_input", 14),
    EDIT: ("image_urls", 10),
    SEEDREAM_V4_EDIT: ("image_urls", 10),
    SEEDREAM_45_EDIT: ("image_urls", 14),
    FLUX2_PRO_I2I: ("input_urls", 8),
    GPT_IMAGE_I2I: ("input_urls", 16),
    CHARACTER: ("reference_image_urls", 1),  # Kie uses only the first: more is refused, not dropped
}


@pytest.mark.parametrize(("name", "field", "limit"), [(n, f, lim) for n, (f, lim) in IMAGES_MAX.items()])
def test_image_count_at_the_documented_limit_passes_and_one_more_is_refused(name, field, limit):
    assert sent(name, imageInput=urls(limit))[field] == urls(limit)

    message = rejection(body_for(name, imageInput=urls(limit + 1)))

    assert message == f"imageInput has {limit + 1} images; model {name} accepts at most {limit}"


@pytest.mark.parametrize("name", [QWEN_EDIT, KVID_I2I])
def test_single_image_models_get_image_url_as_one_string(name):
    assert sent(name, imageInput=[URL])["image_url"] == URL
    assert rejection(body_for(name, imageInput=urls(2))) == f"imageInput has 2 images; model {name} accepts at most 1"


@pytest.mark.parametrize("images", ["omitted", None, []])
@pytest.mark.parametrize("name", sorted(NEEDS_IMAGE))
def test_image_models_need_an_image(name, images):
    body = {"prompt": "a cat", "model": name}
    if images != "omitted":
        body["imageInput"] = images

    assert rejection(body) == f"imageInput needs at least one image URL for model {name}"


@pytest.mark.parametrize(
    "bad_url",
    [
        "/images/a.png",
        "//cdn.example.com/a.png",
        "ftp://cdn.example.com/a.png",
        "file:///etc/passwd",
        "https:///a.png",
        "data:image/png;base64,iVBORw0KGgo=",
        "https://cdn.example.com/a b.png",
        "http://[::1",
        "",
    ],
)
@pytest.mark.parametrize("name", [PRO, EDIT, GPT4O])
def test_non_absolute_http_url_is_refused_by_index(name, bad_url):
    message = rejection(body_for(name, imageInput=[URL, bad_url]))

    assert message == "imageInput[1] must be an absolute http(s) URL"


@pytest.mark.parametrize("name", [QWEN_EDIT, KONTEXT_PRO])
def test_single_image_models_check_the_url_too(name):
    assert rejection(body_for(name, imageInput=["/a.png"])) == "imageInput[0] must be an absolute http(s) URL"


# --- body shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["callBackUrl", "image_input", "aspect_ratio", "n", "Prompt", "input"])
def test_unknown_top_level_field_is_named(field):
    assert rejection({"prompt": "x", field: "anything"}) == f"Unknown field '{field}'"


@pytest.mark.parametrize("body", [[], [{"prompt": "x"}], "a cat", None, 42, True])
def test_body_that_is_not_an_object_is_refused(body):
    assert rejection(body) == "Request body must be a JSON object"


def test_refusing_a_request_leaves_the_body_untouched():
    body = body_for(GPT4O, numImages=3)

    assert rejection(body) == rejection(body)
    assert body == {"prompt": "a cat", "model": GPT4O, "numImages": 3}
