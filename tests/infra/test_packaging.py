"""The Lambda code asset and the dependencies layer's inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirflow_infra.packaging import require_layer, service_packages, stage_code


def test_stage_code_copies_every_package(tmp_path: Path) -> None:
    (tmp_path / "code" / "stale").mkdir(parents=True)
    out = stage_code(tmp_path / "code")
    expected = {"fhirflow", "fhirflow_contracts", *(p.package for p in service_packages().values())}
    assert {p.name for p in out.iterdir()} == expected


def test_a_missing_layer_is_reported_with_the_way_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make layer"):
        require_layer(tmp_path)


def test_the_layer_holds_the_runtime_dependencies_and_not_the_embedded_ones() -> None:
    import build_layer

    names = {build_layer.requirement_name(r) for r in build_layer.requirements()}
    assert {"pydantic", "orjson", "aws-lambda-powertools", "joserfc", "fhirpathpy", "aws-xray-sdk"} <= names
    # index-sync and search on OpenSearch: opensearch-py, and boto3 for the SigV4 credentials
    assert {"opensearch-py", "boto3"} <= names
    assert not names & build_layer.EMBEDDED_ONLY
