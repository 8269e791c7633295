"""Generate fhirflow/searchparams/data/registry.json.gz from the official R4 definitions.

Development-time only (``make generate``); the product reads the generated file, never ../shared.

Inputs: ../shared/fhir-r4/search-parameters.json (Bundle of SearchParameter),
hl7.fhir.r4.core/StructureDefinition-*.json (the list of resource types) and the five
CompartmentDefinitions. Element types come from fhirpathpy's R4 model, the same model the
reference FHIRPath evaluator uses. Output is deterministic (sorted keys, gzip mtime 0).
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

from fhirflow.searchparams.build import build_params
from fhirflow.searchparams.compiler import TypeModel
from fhirflow.searchparams.registry import param_to_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = ROOT.parent / "shared" / "fhir-r4"
OUTPUT = ROOT / "fhirflow" / "searchparams" / "data" / "registry.json.gz"
COMPARTMENTS = ("patient", "encounter", "relatedPerson", "practitioner", "device")

# Parameters for all resources that the official bundle does not define (search.html#all).
EXTRA_COMMON: list[dict[str, Any]] = [
    {
        "resourceType": "SearchParameter",
        "url": "http://hl7.org/fhir/SearchParameter/Resource-list",
        "code": "_list",
        "base": ["Resource"],
        "type": "special",
    }
]


def resource_types(core: Path) -> tuple[list[str], list[str]]:
    """Concrete resource types, and those that are not DomainResources (Bundle, Binary, Parameters)."""
    types, non_domain = [], []
    for path in sorted(core.glob("StructureDefinition-*.json")):
        sd = json.loads(path.read_text())
        if sd.get("kind") != "resource" or sd.get("derivation") != "specialization" or sd.get("abstract"):
            continue
        types.append(sd["type"])
        if sd.get("baseDefinition", "").endswith("/Resource"):
            non_domain.append(sd["type"])
    return sorted(types), sorted(non_domain)


def compartments(core: Path, params: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for name in COMPARTMENTS:
        definition = json.loads((core / f"CompartmentDefinition-{name}.json").read_text())
        by_type: dict[str, list[str]] = {}
        for entry in definition["resource"]:
            codes = [c for c in entry.get("param", []) if c != "{def}"]
            for code in codes:
                param = params.get(entry["code"], {}).get(code)
                if param is None or param["t"] != "reference":
                    raise SystemExit(f"compartment {definition['code']}: {entry['code']}.{code} is not a reference")
            if codes:
                by_type[entry["code"]] = codes
        out[definition["code"]] = by_type
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the fhir-r4 folder")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    core = args.shared / "hl7.fhir.r4.core"

    types, non_domain = resource_types(core)
    bundle = json.loads((args.shared / "search-parameters.json").read_text())
    definitions = [e["resource"] for e in bundle["entry"]] + EXTRA_COMMON
    built = build_params(definitions, resource_types=types, model=TypeModel.r4())

    params: dict[str, dict[str, Any]] = {}
    for param in built:
        params.setdefault(param.base, {})[param.code] = param_to_json(param)
    data = {
        "fhirVersion": "4.0.1",
        "resourceTypes": types,
        "nonDomain": non_domain,
        "params": params,
        "compartments": compartments(core, params),
    }
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))

    parts = [p for param in built for p in param.parts]
    fallback = sorted(
        {f"{p.base}.{p.code}: {part.expression}" for p in built for part in p.parts if part.steps is None}
    )
    print(
        f"{len(built)} parameters on {len(params)} bases; {len(parts)} expression parts, {len(fallback)} via fhirpathpy"
    )
    print("types:", dict(Counter(p.type for p in built)))
    for line in fallback:
        print("  fhirpathpy:", line)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes, {len(raw)} uncompressed)")


if __name__ == "__main__":
    main()
