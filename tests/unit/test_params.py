"""Param: how one request value is checked and converted for upstream, and how discovery describes it."""

from __future__ import annotations

import math
from typing import Any

import pytest

from app.providers.catalogue import MODELS
from app.providers.params import Param, enum, flag, integer, is_absolute_http_url, number, text, url

RATIO = enum("aspect_ratio", "1:1 16:9 auto", default="1:1")
QUALITY = enum("quality", {"2K": "basic", "4K": "high"}, default="2K")  # gateway value -> Kie value
VARIANTS = enum("nVariants", {1: 1, 2: 2, 4: 4}, default=1)
GUIDANCE = enum("guidance_scale", {3: 3, 5: 5, 7.5: 7.5, 10: 10})
COUNT = integer("max_images", 1, 6)
COUNT_AS_STRING = integer("num_images", 1, 4, as_string=True)
SCALE = number("guidance_scale", 0, 20)
FLAG = flag("nsfw_checker")
TEXT = text("negative_prompt", 5)
MASK = url("maskUrl")


# --- accepted values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value", "sent"),
    [
        (RATIO, "16:9", "16:9"),
        (RATIO, "auto", "auto"),
        (QUALITY, "2K", "basic"),
        (QUALITY, "4K", "high"),
        (VARIANTS, 4, 4),
        (GUIDANCE, 7.5, 7.5),
        (GUIDANCE, 10, 10),
        (COUNT, 1, 1),
        (COUNT, 6, 6),
        (COUNT_AS_STRING, 1, "1"),
        (COUNT_AS_STRING, 4, "4"),
        (SCALE, 0, 0),
        (SCALE, 2.5, 2.5),
        (SCALE, 20, 20),
        (FLAG, True, True),
        (FLAG, False, False),
        (TEXT, "", ""),
        (TEXT, "abcde", "abcde"),
        (MASK, "https://cdn.example.com/mask.png", "https://cdn.example.com/mask.png"),
    ],
)
def test_accepted_value_is_sent_upstream_in_the_providers_form(param, value, sent):
    converted = param.convert(value)

    assert converted == sent
    assert type(converted) is type(sent)


def test_as_string_sends_the_number_as_a_string_only_after_the_range_check():
    assert integer("seed", 0, 100, as_string=True).convert(42) == "42"
    with pytest.raises(ValueError, match="^must be between 1 and 4$"):
        COUNT_AS_STRING.convert(5)


# --- refused values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        (RATIO, "7:3", "must be one of: 1:1, 16:9, auto"),
        (RATIO, "", "must be one of: 1:1, 16:9, auto"),
        (RATIO, 16, "must be one of: 1:1, 16:9, auto"),
        (QUALITY, "basic", "must be one of: 2K, 4K"),  # the upstream spelling is not a client value
        (QUALITY, "1K", "must be one of: 2K, 4K"),
        (VARIANTS, 3, "must be one of: 1, 2, 4"),
        (VARIANTS, "4", "must be one of: 1, 2, 4"),
        (VARIANTS, True, "must be one of: 1, 2, 4"),  # True == 1 in Python, but it is not a count
        (GUIDANCE, 7, "must be one of: 3, 5, 7.5, 10"),
        (COUNT, 0, "must be between 1 and 6"),
        (COUNT, 7, "must be between 1 and 6"),
        (COUNT, True, "must be an integer between 1 and 6"),
        (COUNT, False, "must be an integer between 1 and 6"),
        (COUNT, 2.0, "must be an integer between 1 and 6"),
        (COUNT, "2", "must be an integer between 1 and 6"),
        (COUNT, None, "must be an integer between 1 and 6"),
        (COUNT_AS_STRING, "2", "must be an integer between 1 and 4"),  # clients send numbers, Kie gets strings
        (SCALE, -0.5, "must be between 0 and 20"),
        (SCALE, 20.01, "must be between 0 and 20"),
        (SCALE, math.inf, "must be between 0 and 20"),
        (SCALE, True, "must be a number between 0 and 20"),
        (SCALE, "2.5", "must be a number between 0 and 20"),
        (FLAG, 1, "must be true or false"),
        (FLAG, 0, "must be true or false"),
        (FLAG, "true", "must be true or false"),
        (FLAG, None, "must be true or false"),
        (TEXT, "abcdef", "must be at most 5 characters"),
        (TEXT, 5, "must be a string"),
        (TEXT, ["a"], "must be a string"),
        (MASK, "/mask.png", "must be an absolute http(s) URL"),
        (MASK, "ftp://cdn.example.com/mask.png", "must be an absolute http(s) URL"),
        (MASK, 5, "must be an absolute http(s) URL"),
    ],
)
def test_refused_value_says_what_the_value_must_be(param, value, message):
    with pytest.raises(ValueError) as raised:
        param.convert(value)

    assert str(raised.value) == message


def test_nan_is_not_a_number_in_range():
    with pytest.raises(ValueError):
        SCALE.convert(math.nan)


# --- discovery ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "described"),
    [
        (RATIO, {"type": "string", "values": ["1:1", "16:9", "auto"], "default": "1:1"}),
        (QUALITY, {"type": "string", "values": ["2K", "4K"], "default": "2K"}),  # client values, not Kie's
        (enum("style", "AUTO GENERAL"), {"type": "string", "values": ["AUTO", "GENERAL"]}),
        (COUNT, {"type": "integer", "min": 1, "max": 6}),
        (integer("num_images", 1, 4, as_string=True, default=1), {"type": "integer", "min": 1, "max": 4, "default": 1}),
        (SCALE, {"type": "number", "min": 0, "max": 20}),
        (FLAG, {"type": "boolean"}),
        (TEXT, {"type": "string", "maxLength": 5}),
        (Param("prompt", "string", low=3, high=5000), {"type": "string", "minLength": 3, "maxLength": 5000}),
        (MASK, {"type": "string"}),
    ],
)
def test_describe_shows_the_client_facing_type_choices_limits_and_default(param, described):
    assert param.describe() == described


@pytest.mark.parametrize(
    ("param", "described"),
    [
        (VARIANTS, {"type": "number", "values": [1, 2, 4], "default": 1}),
        (GUIDANCE, {"type": "number", "values": [3, 5, 7.5, 10]}),
    ],
)
def test_describe_types_numeric_choices_as_numbers_so_clients_do_not_send_strings(param, described):
    assert param.describe() == described


DECLARED_DEFAULTS = [
    pytest.param(param, id=f"{name}:{where}.{field}")
    for name, spec in MODELS.items()
    for where, table in (("fields", spec.fields), ("options", spec.options))
    for field, param in table.items()
    if param.default is not None
]


@pytest.mark.parametrize("param", DECLARED_DEFAULTS)
def test_every_declared_default_is_itself_an_accepted_value(param: Param):
    param.convert(param.default)


# --- URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "http://example.com",
        "https://cdn.example.com/a.png",
        "HTTPS://EXAMPLE.COM/A.PNG",
        "https://user@cdn.example.com:8443/a.png?x=1#f",
        "http://127.0.0.1:8080/a.png",
        "http://[::1]/a.png",
    ],
)
def test_absolute_http_urls_are_recognised(value):
    assert is_absolute_http_url(value) is True


@pytest.mark.parametrize(
    "value",
    [
        "",
        "/images/a.png",
        "images/a.png",
        "//cdn.example.com/a.png",
        "ftp://cdn.example.com/a.png",
        "file:///etc/passwd",
        "http://",
        "https:///a.png",
        "javascript:alert(1)",
        "mailto:someone@example.com",
        "data:image/png;base64,iVBORw0KGgo=",
        "https://cdn.example.com/a b.png",
        " https://cdn.example.com/a.png",
        "https://cdn.example.com/a.png\n",
        "http://[::1",
    ],
)
def test_relative_non_http_or_malformed_urls_are_not(value: Any):
    assert is_absolute_http_url(value) is False
