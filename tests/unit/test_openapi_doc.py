"""The OpenAPI 3.1 description shipped in the package: valid, and in step with the code and the README."""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import Path

from openapi_spec_validator import OpenAPIV31SpecValidator, validate

import replog
from replog.config import MasterConfig
from replog.master_app import build_master_app

ROOT = Path(__file__).resolve().parents[2]


def document() -> dict:
    return json.loads(importlib.resources.files("replog").joinpath("openapi.json").read_bytes())


def test_it_is_a_valid_openapi_3_1_document():
    doc = document()
    assert doc["openapi"] == "3.1.0"
    validate(doc, cls=OpenAPIV31SpecValidator)  # raises OpenAPIValidationError naming the first problem
    assert doc["info"]["version"] == replog.__version__


def test_it_describes_every_client_route_of_the_master():
    """Every route of the master's app, and nothing else: a new route cannot go undescribed."""
    app = build_master_app(MasterConfig(secondaries=("http://127.0.0.1:9",)))
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD"  # aiohttp adds one to every GET
    }
    described = {(method, path) for path, ops in document()["paths"].items() for method in ops}
    assert described == routes


def test_it_names_every_answer_and_error_code_the_readme_lists():
    readme = (ROOT / "README.md").read_text()
    answers = readme[readme.index("Answers: `201` stored") :]
    answers = answers[: answers.index("\n\n")]
    codes = set(re.findall(r"`(?:[1-5]\d\d )?([a-z_]+)`", answers))
    statuses = set(re.findall(r"`([1-5]\d\d)", answers))
    assert {"invalid_json", "invalid_w", "reserved_id", "id_conflict", "no_quorum", "write_concern_timeout"} <= codes
    text = json.dumps(document())
    assert {code for code in codes if code not in text} == set()
    post = document()["paths"]["/messages"]["post"]["responses"]
    assert statuses <= set(post), statuses - set(post)


def test_every_error_answer_has_the_error_body():
    doc = document()

    def resolve(obj: dict) -> dict:
        while "$ref" in obj:
            _, *parts = obj["$ref"].split("/")
            obj = doc
            for part in parts:
                obj = obj[part]
        return obj

    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                if int(status) < 400:
                    continue
                schema = resolve(resolve(answer)["content"]["application/json"]["schema"])
                required = set(schema.get("required", ())) | {
                    r for part in schema.get("allOf", ()) for r in resolve(part).get("required", ())
                }
                assert {"error", "detail"} <= required, (method, path, status)
