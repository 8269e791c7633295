"""The published contracts: snapshots of their JSON Schemas, versioning and wire format."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

import fhirflow_contracts
from fhirflow_contracts import CONTRACTS, ResourceChanged, change_event_id
from fhirflow_contracts.snapshots import breaking_changes, render, schema_of, snapshot_path


@pytest.mark.parametrize("model", CONTRACTS, ids=lambda m: m.__name__)
def test_schema_matches_the_committed_snapshot(model) -> None:
    path = snapshot_path(model)
    assert path.exists(), f"no snapshot for {model.__name__}: run python -m fhirflow_contracts.snapshots"
    committed = json.loads(path.read_text())
    current = schema_of(model)
    for mode in ("validation", "serialization"):
        problems = breaking_changes(committed[mode], current[mode])
        assert not problems, f"{model.__name__} {mode}: breaking changes need a new major version: {problems}"
    assert render(current) == path.read_text(), (
        f"{model.__name__}'s schema changed compatibly; commit the new snapshot "
        "(python -m fhirflow_contracts.snapshots)"
    )


def test_the_breaking_change_detector_catches_what_it_must() -> None:
    old = schema_of(ResourceChanged)["validation"]
    renamed = json.loads(json.dumps(old))
    renamed["properties"]["version"] = renamed["properties"].pop("versionId")
    assert "/versionId: removed" in breaking_changes(old, renamed)
    retyped = json.loads(json.dumps(old))
    retyped["properties"]["versionId"]["type"] = "integer"
    assert any("versionId: type" in p for p in breaking_changes(old, retyped))
    stricter = json.loads(json.dumps(old))
    stricter["properties"]["extra"] = {"type": "string"}
    assert breaking_changes(old, stricter) == []
    stricter["required"].append("extra")
    assert breaking_changes(old, stricter) == ["/extra: newly required"]


def sample(**overrides) -> ResourceChanged:
    arguments = {
        "tenant": "acme",
        "resource_type": "Patient",
        "id": "p1",
        "version": 3,
        "operation": "update",
        "last_updated_ms": 1_700_000_000_123,
        "request_id": "req-9",
    }
    return ResourceChanged.of(**{**arguments, **overrides})


def test_wire_format_is_camel_case_with_millisecond_instants() -> None:
    detail = json.loads(sample().to_json())
    assert detail == {
        "metadata": {
            "eventType": "ResourceChanged",
            "version": "v1",
            "eventId": change_event_id("acme", "Patient", "p1", 3),
            "occurredAt": "2023-11-14T22:13:20.123Z",
            "source": "fhirflow",
        },
        "tenant": "acme",
        "resourceType": "Patient",
        "id": "p1",
        "versionId": "3",
        "operation": "update",
        "lastUpdated": "2023-11-14T22:13:20.123Z",
        "requestId": "req-9",
    }
    assert ResourceChanged.model_validate_json(sample().to_json()) == sample()


def test_event_ids_are_stable_per_version_and_distinct_otherwise() -> None:
    assert sample().metadata.event_id == sample().metadata.event_id
    assert sample(version=4).metadata.event_id != sample().metadata.event_id
    assert sample(tenant="other").metadata.event_id != sample().metadata.event_id


def test_consumers_accept_additive_fields_and_reject_other_versions() -> None:
    detail = json.loads(sample().to_json())
    detail["addedLater"] = "ignored by v1 consumers"
    assert ResourceChanged.model_validate(detail) == sample()
    detail["metadata"]["version"] = "v2"
    with pytest.raises(ValidationError, match="not a ResourceChanged v1"):
        ResourceChanged.model_validate(detail)
    detail["metadata"].update(version="v1", eventType="SomethingElse")
    with pytest.raises(ValidationError):
        ResourceChanged.model_validate(detail)


def test_operation_and_instants_are_checked() -> None:
    detail = json.loads(sample().to_json())
    with pytest.raises(ValidationError):
        ResourceChanged.model_validate({**detail, "operation": "patch"})
    with pytest.raises(ValidationError):
        ResourceChanged.model_validate({**detail, "lastUpdated": "2023-11-14T22:13:20"})  # no zone


def test_the_contracts_package_is_a_leaf() -> None:
    package = Path(fhirflow_contracts.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    top = name.split(".")[0]
                    assert top in {
                        "pydantic",
                        "fhirflow_contracts",
                        "__future__",
                        "uuid",
                        "datetime",
                        "typing",
                        "json",
                        "sys",
                        "pathlib",
                    }, f"{source.name} imports {name}"
