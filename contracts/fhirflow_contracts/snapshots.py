"""JSON Schema snapshots of the contracts, committed in ``schemas/`` and checked by the tests.

Regenerate after an additive change (a new optional field) with
``python -m fhirflow_contracts.snapshots``; a breaking change needs a new major version instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

SCHEMA_DIR = Path(__file__).parent / "schemas"


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """What consumers parse (validation) and what producers emit (serialization)."""
    return {
        "validation": model.model_json_schema(by_alias=True, mode="validation"),
        "serialization": model.model_json_schema(by_alias=True, mode="serialization"),
    }


def snapshot_path(model: type[BaseModel]) -> Path:
    version = str(getattr(model, "VERSION", "v1"))
    return SCHEMA_DIR / f"{model.__name__}.{version}.json"


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def breaking_changes(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    """What in ``new`` breaks a consumer or producer of ``old``: removed or retyped properties,
    newly required ones. Additions of optional properties are not breaking."""
    problems: list[str] = []
    if old.get("type") != new.get("type") or old.get("$ref") != new.get("$ref"):
        problems.append(
            f"{path or '/'}: type {old.get('type') or old.get('$ref')} → {new.get('type') or new.get('$ref')}"
        )
    if old.get("enum") is not None and set(old["enum"]) - set(new.get("enum") or []):
        problems.append(f"{path or '/'}: enum values removed")
    if old.get("const") != new.get("const"):
        problems.append(f"{path or '/'}: const changed")
    added_required = set(new.get("required", [])) - set(old.get("required", []))
    problems.extend(f"{path}/{name}: newly required" for name in sorted(added_required))
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name, schema in old_props.items():
        if name not in new_props:
            problems.append(f"{path}/{name}: removed")
        else:
            problems.extend(breaking_changes(schema, new_props[name], f"{path}/{name}"))
    for name, schema in old.get("$defs", {}).items():
        if name in new.get("$defs", {}):
            problems.extend(breaking_changes(schema, new["$defs"][name], f"$defs/{name}"))
        else:
            problems.append(f"$defs/{name}: removed")
    return problems


def main() -> int:
    from fhirflow_contracts import CONTRACTS

    SCHEMA_DIR.mkdir(exist_ok=True)
    for model in CONTRACTS:
        path = snapshot_path(model)
        path.write_text(render(schema_of(model)))
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
