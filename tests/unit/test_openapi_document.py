"""The OpenAPI document is a valid OpenAPI 3.1 document, names every route the app serves, and accepts
every generate request the gateway accepts (it is built from the same model table)."""

from __future__ import annotations

from typing import Any

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from starlette.routing import Route

from app.contract.document import build
from app.errors import BadRequest
from app.main import ROUTES
from app.providers.catalogue import MODEL_LIST
from app.tasks.validation import COMMON_FIELDS, parse_generate

DOCUMENT = build()
ERROR = {"$ref": "#/components/schemas/Error"}
OPENAI_ERROR = {"$ref": "#/components/schemas/OpenAIError"}  # the /v1 routes answer in OpenAI's shape


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"] == "3.1.0"


def test_every_route_of_the_app_is_in_the_document() -> None:
    served = {
        (route.path, method.lower())
        for route in ROUTES
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"  # answered for every GET
    }
    documented = {(path, method) for path, item in DOCUMENT["paths"].items() for method in item}
    assert served == documented


def test_every_operation_documents_its_errors_as_the_error_shape() -> None:
    ids = [op["operationId"] for item in DOCUMENT["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for item in DOCUMENT["paths"].values():
        for operation in item.values():
            for code, answer in operation["responses"].items():
                content = answer.get("content", {})
                if code.startswith("4") and "application/json" in content:
                    schema = content["application/json"]["schema"]
                    errors = [OPENAI_ERROR] if "openai" in operation["tags"] else [ERROR]
                    assert any(e in [schema, *schema.get("allOf", [])] for e in errors), (code, schema)


def test_the_generate_request_has_one_branch_per_model() -> None:
    branches = DOCUMENT["components"]["schemas"]["GenerateRequest"]["oneOf"]
    titles = [DOCUMENT["components"]["schemas"][b["$ref"].rsplit("/", 1)[1]]["title"] for b in branches]
    assert titles == [spec.name for spec in MODEL_LIST]


GENERATE = jsonschema.Draft202012Validator(
    {"$ref": "#/components/schemas/GenerateRequest", "components": DOCUMENT["components"]}
)


def _values_for(spec_index: int) -> st.SearchStrategy[Any]:
    """Values a client might send for a field: the model's own accepted values, and anything else."""
    spec = MODEL_LIST[spec_index]
    accepted = [value for param in (*spec.fields.values(), *spec.options.values()) for value in (param.values or ())]
    return st.sampled_from(accepted or [None]) | st.none() | st.integers(-5, 10) | st.text(max_size=8) | st.booleans()


@st.composite
def generate_bodies(draw: st.DrawFn) -> dict[str, Any]:
    index = draw(st.integers(0, len(MODEL_LIST) - 1))
    spec, values = MODEL_LIST[index], _values_for(index)
    body: dict[str, Any] = {"model": spec.name} if draw(st.booleans()) or index else {}
    body["prompt"] = draw(st.sampled_from(["a lighthouse", "", "  ", None]) | st.text(max_size=12))
    for name in draw(st.lists(st.sampled_from(COMMON_FIELDS), max_size=4, unique=True)):
        body[name] = draw(values)
    if draw(st.booleans()):
        body["imageInput"] = draw(st.lists(st.sampled_from(["https://example.com/a.png", "ftp://x", "a"]), max_size=3))
    if draw(st.booleans()):
        body["options"] = draw(st.dictionaries(st.sampled_from([*spec.options, "other"]), values, max_size=2))
    return body


@settings(max_examples=600, deadline=None)
@given(generate_bodies())
def test_every_request_the_gateway_accepts_the_document_accepts_too(body: dict[str, Any]) -> None:
    try:
        parse_generate(body)
    except BadRequest:
        return
    errors = [error.message for error in GENERATE.iter_errors(body)]
    assert not errors, (body, errors)
