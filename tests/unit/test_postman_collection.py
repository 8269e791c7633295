"""The Postman collection and environments in postman/ are what tools/gen_postman.py makes from the
route table now (so they never drift from the routes), and they cover every route (issue 15, point 7).
newman runs them against the server in tests/e2e/test_postman_newman.py."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fhirflow.routes import ROUTE_TABLE

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_postman", REPO / "tools" / "gen_postman.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_committed_files_are_what_the_route_table_gives(generator: ModuleType) -> None:
    for name, text in generator.rendered().items():
        committed = (REPO / "postman" / name).read_text("utf-8")
        assert committed == text, f"postman/{name} is stale: run python tools/gen_postman.py"


def _requests(collection: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for folder in collection["item"] for item in folder["item"]]


def test_every_route_is_exercised_by_a_request_routed_to_it(generator: ModuleType) -> None:
    collection = json.loads((REPO / "postman" / "fhirflow.postman_collection.json").read_text("utf-8"))
    assert collection["info"]["schema"] == "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
    exercised = set()
    for item in _requests(collection):
        request = item["request"]
        path = "/" + "/".join(request["url"]["path"])
        concrete = path.replace("{{", "").replace("}}", "")  # a variable stands for one path segment
        route, _ = ROUTE_TABLE.match(request["method"], concrete)
        assert f"`{route.method} {route.pattern}`" in request["description"], item["name"]
        exercised.add((route.method, route.pattern))
        assert any(event["listen"] == "test" and event["script"]["exec"] for event in item["event"]), item["name"]
    assert set(generator.table_routes()) <= exercised


def test_the_aws_environment_asks_for_a_client_credentials_token(generator: ModuleType) -> None:
    aws = json.loads((REPO / "postman" / "fhirflow-aws.postman_environment.json").read_text("utf-8"))
    values = {v["key"]: v for v in aws["values"]}
    assert {"baseUrl", "tokenUrl", "clientId", "clientSecret", "scope"} <= set(values)
    assert values["clientSecret"]["type"] == "secret"
    assert values["scope"]["value"].startswith("system/")
    collection = json.loads((REPO / "postman" / "fhirflow.postman_collection.json").read_text("utf-8"))
    prerequest = "\n".join(line for event in collection["event"] for line in event["script"]["exec"])
    assert "grant_type', value: 'client_credentials'" in prerequest
