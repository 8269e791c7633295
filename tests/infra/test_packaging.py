"""The Lambda code asset and the dependencies layer's inputs."""

from __future__ import annotations

import re
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
    assert {"pydantic", "orjson", "aws-lambda-powertools", "joserfc", "fhirpathpy"} <= names
    # index-sync and search on OpenSearch: opensearch-py, and boto3 for the SigV4 credentials
    assert {"opensearch-py", "boto3"} <= names
    assert not names & build_layer.EMBEDDED_ONLY
    assert not names & build_layer.NEVER_IMPORTED


def _imported_modules() -> set[str]:
    """The top-level modules the code asset's packages import (anywhere, lazily too)."""
    import ast

    from fhirflow_infra.packaging import package_sources

    found: set[str] = set()
    for package in package_sources():
        for source in package.rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module.split(".")[0])
    return found


def test_every_requirement_of_the_layer_is_imported_by_the_code() -> None:
    import build_layer

    imported = _imported_modules()
    for requirement in build_layer.requirements():
        name = build_layer.requirement_name(requirement)
        module = build_layer.IMPORT_NAMES.get(name, name.replace("-", "_"))
        assert module in imported, f"{name} is in the layer but no Lambda imports {module}"
    for name in build_layer.NEVER_IMPORTED:
        assert build_layer.IMPORT_NAMES.get(name, name.replace("-", "_")) not in imported, name


def test_the_layer_is_built_from_a_lock_of_exact_versions() -> None:
    import build_layer

    pins = build_layer.locked()
    names = [pin.split("==")[0] for pin in pins]
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9._-]*==[0-9][A-Za-z0-9.+-]*", pin) for pin in pins), pins
    assert len(set(names)) == len(names)
    wanted = {build_layer.requirement_name(r) for r in build_layer.requirements()}
    assert wanted <= set(names), "every requirement is pinned (run infra/build_layer.py --lock)"
    assert not set(names) & (build_layer.NEVER_IMPORTED | build_layer.EMBEDDED_ONLY)
    # What each pin requires is pinned too: the layer installs with --no-deps.
    assert {"pydantic-core", "botocore", "urllib3", "cryptography"} <= set(names)
