"""The layering contracts (docs/architecture.md, Layers; [tool.importlinter] in pyproject.toml) hold,
and they bite: `make test` enforces them as `make lint` does, and a back-import breaks them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from importlinter import configuration
from importlinter.application import use_cases

configuration.configure()  # what `lint-imports` does first: the config readers and the graph builder

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _lint(contracts: tuple[str, ...] = (), added: tuple[str, str] | None = None) -> bool:
    """import-linter over the real import graph (plus the import ``added``, if any): True if kept."""
    build = use_cases._build_graph

    def with_added(*args: Any, **kwargs: Any) -> Any:
        graph = build(*args, **kwargs)
        if added is not None:
            graph.add_import(importer=added[0], imported=added[1], line_number=1, line_contents="import")
        return graph

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(use_cases, "_build_graph", with_added)
        return bool(
            use_cases.lint_imports(
                str(PYPROJECT), limit_to_contracts=contracts, cache_dir=None, no_logo=True, is_debug_mode=True
            )
        )


def test_every_layering_contract_is_kept(capsys: pytest.CaptureFixture[str]) -> None:
    kept = _lint()
    assert kept, capsys.readouterr().out


@pytest.mark.parametrize(
    ("contract", "importer", "imported"),
    [
        ("kernel", "fhirflow.runtime", "fhirflow.local.worker"),
        ("kernel", "fhirflow.versioning", "fhirflow_crud.app"),
        ("adapters", "fhirflow.adapters.sqlite.subscriptions", "fhirflow_subscriptions.hook"),
        ("services", "fhirflow_export.app", "fhirflow_crud.app"),
        ("services", "fhirflow_index_sync.sync", "fhirflow_search.usecase"),
    ],
)
def test_a_back_import_breaks_its_contract(
    contract: str, importer: str, imported: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _lint((contract,), (importer, imported)) is False
    assert f"{importer} -> {imported}" in capsys.readouterr().out
