"""The OpenAPI description held against real answers: schemathesis against a live master.

A real cluster (`replog master` and two `replog secondary` processes) serves every request that
schemathesis generates from the description shipped in the package: its examples, its coverage cases
(boundaries, and invalid values that must be refused) and property-based fuzzing, with a fixed seed and a
bounded number of examples per operation. Every answer must conform to the description (status, content
type, body schema, Allow header); valid requests must be accepted and invalid ones refused; and no answer
may be a 5xx but the documented `504 write_concern_timeout` (a generated `timeout` of 1e-300 s is a valid
request whose write concern cannot be met in time).
"""

from __future__ import annotations

import copy
import importlib.resources
import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from replog.tools.cluster import LocalCluster, http_json

SECONDARIES = 2
DOCUMENT = json.loads(importlib.resources.files("replog").joinpath("openapi.json").read_bytes())


def for_this_cluster(doc: dict[str, Any]) -> dict[str, Any]:
    """The description with the one bound it cannot state for every cluster (w is at most N+1), less
    what a request-and-answer check cannot hold (below)."""
    doc = copy.deepcopy(doc)
    # An endless event stream is no single answer to validate (tests/e2e and tests/http cover it), and
    # a long-poll may wait up to 60 s per request: its own tests cover it, so the run stays short.
    del doc["paths"]["/messages/stream"]
    get = doc["paths"]["/messages"]["get"]
    get["parameters"] = [p for p in get["parameters"] if p["$ref"] != "#/components/parameters/wait"]
    for name in ("WriteOne", "WriteBatch"):
        doc["components"]["schemas"][name]["properties"]["w"]["oneOf"][0]["maximum"] = SECONDARIES + 1
    return doc


schema = schemathesis.openapi.from_dict(for_this_cluster(DOCUMENT))


def no_server_error(ctx: Any, response: Any, case: Any) -> None:
    """No 5xx, but the documented write concern timeout (the message is stored; the wait was not met)."""
    if response.status_code < 500:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 504 and isinstance(body, dict) and body.get("error") == "write_concern_timeout":
        return
    raise AssertionError(f"{case.method} {case.path} answered {response.status_code}: {response.text[:500]}")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(SECONDARIES, workdir=tmp_path_factory.mktemp("contract"))
    try:
        cluster.start()
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()


@schema.parametrize()
@settings(
    max_examples=150,
    derandomize=True,  # a fixed seed: the same requests on every run
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_conforms(case: Any, live: LocalCluster) -> None:
    case.call_and_validate(
        base_url=live.master.url, timeout=30, excluded_checks=[not_a_server_error], additional_checks=[no_server_error]
    )


def test_every_node_serves_the_description_and_liveness(live: LocalCluster) -> None:
    for node in live.nodes:
        assert http_json("GET", node.url + "/openapi.json") == (200, DOCUMENT)
        assert http_json("GET", node.url + "/livez") == (200, {"status": "alive"})
