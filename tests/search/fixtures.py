"""The search fixture: every official R4 example in ../shared (705 files; its README says 706) and a few
Synthea patients, indexed once.

HL7 examples keep their ids; each gets version 1 and a distinct lastUpdated (one second apart,
in file-name order from 2024-01-01T00:00:00Z) so that ``_lastUpdated`` and ``_sort`` have
something to order. Synthea's ``urn:uuid`` references become ``Type/uuid`` and the uuid the id,
as the bundle service would do. A second tenant holds copies of two examples under other names,
to show that nothing crosses tenants.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex
from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.index import SqliteSearchIndex
from fhirflow.ports import IndexWrite

SHARED = Path(__file__).resolve().parents[3] / "shared"
EXAMPLES = SHARED / "fhir-r4" / "examples"
SYNTHEA = SHARED / "synthea"
SYNTHEA_FILES = (
    "hospitalInformation1559319163815.json",
    "practitionerInformation1559319163815.json",
    "Asa_Hermiston_4384bf23-1dc3-48ca-8c84-89fbaff201ae.json",
    "Barney_Abbott_3f228315-d2de-4292-a56a-b7c120c2875d.json",
    "Ardith_Welch_2513dd98-e1c9-4476-b879-5a2142caccde.json",
)
BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
TENANT = "default"
OTHER_TENANT = "other"


def instant(ms: int) -> str:
    from fhirflow.timefmt import instant as format_instant

    return format_instant(ms)


def examples() -> list[dict[str, Any]]:
    out = []
    for path in sorted(EXAMPLES.glob("*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        if "id" not in resource:
            resource["id"] = path.stem.split("-", 1)[1]
        out.append(resource)
    return out


def _rewrite(node: Any, mapping: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite(v, mapping) for k, v in node.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in mapping:
            out["reference"] = mapping[ref]
        return out
    if isinstance(node, list):
        return [_rewrite(v, mapping) for v in node]
    return node


def synthea(files: tuple[str, ...] = SYNTHEA_FILES) -> list[dict[str, Any]]:
    """Synthea bundles' resources with references rewritten to ``Type/uuid``."""
    entries = []
    for name in files:
        bundle = json.loads((SYNTHEA / name).read_text(encoding="utf-8"))
        entries.extend(bundle["entry"])
    mapping = {}
    for entry in entries:
        resource = entry["resource"]
        uuid = entry["fullUrl"].removeprefix("urn:uuid:")
        resource["id"] = uuid
        mapping[entry["fullUrl"]] = f"{resource['resourceType']}/{uuid}"
    return [_rewrite(entry["resource"], mapping) for entry in entries]


def stamped(resources: list[dict[str, Any]], start_ms: int) -> Iterator[tuple[dict[str, Any], int]]:
    for n, resource in enumerate(resources):
        ms = start_ms + n * 1000
        meta = dict(resource.get("meta") or {})
        meta.update(versionId="1", lastUpdated=instant(ms))
        yield {**resource, "meta": meta}, ms


UCUM = "http://unitsofmeasure.org"
FF = "http://ff.example"


def crafted() -> list[dict[str, Any]]:
    """A few resources written for this suite (ids ``ff-…``), for what the examples lack: ``_source``,
    a comma in a name, Periods with open ends, a quantity with a comparator, a List."""
    subject = {"reference": "Patient/ff-comma"}
    klass = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}
    glucose = {"coding": [{"system": f"{FF}/codes", "code": "ff-glucose", "display": "Fasting glucose"}]}

    def encounter(id_: str, period: dict[str, str]) -> dict[str, Any]:
        return {
            "resourceType": "Encounter",
            "id": id_,
            "status": "finished",
            "class": klass,
            "subject": subject,
            "period": period,
        }

    return [
        {
            "resourceType": "Patient",
            "id": "ff-comma",
            "meta": {
                "source": f"{FF}/feed#1",
                "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
                "tag": [{"system": f"{FF}/tags", "code": "ff"}],
            },
            "identifier": [
                {
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                    "system": f"{FF}/mrn",
                    "value": "ff-001",
                }
            ],
            "name": [{"family": "Smith, Jr", "given": ["Zoë"]}],
            "gender": "unknown",
            "birthDate": "1990-05",
            "address": [{"city": "Springfield"}],
            "managingOrganization": {"reference": "Organization/f003"},
        },
        encounter("ff-enc-a", {"start": "2020-01-01T10:00:00Z", "end": "2020-01-03T12:00:00Z"}),
        encounter("ff-enc-b", {"start": "2021-05-10"}),
        encounter("ff-enc-c", {"start": "2019-07-01", "end": "2019-07-01"}),
        {
            "resourceType": "Observation",
            "id": "ff-obs-lt",
            "meta": {"tag": [{"system": f"{FF}/tags", "code": "ff"}]},
            "status": "final",
            "code": glucose,
            "subject": subject,
            "encounter": {"reference": "Encounter/ff-enc-a"},
            "effectiveDateTime": "2022-03-04",
            "valueQuantity": {"comparator": "<", "value": 5, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"},
        },
        {
            "resourceType": "Observation",
            "id": "ff-obs-unit",
            "status": "preliminary",
            "code": glucose,
            "subject": subject,
            "effectivePeriod": {"start": "2022-03-01", "end": "2022-03-31"},
            "valueQuantity": {"value": 5.4, "unit": "mmol/l"},
        },
        {
            "resourceType": "List",
            "id": "ff-list",
            "status": "current",
            "mode": "working",
            "entry": [{"item": {"reference": "Patient/ff-comma"}}, {"item": {"reference": "Observation/ff-obs-lt"}}],
        },
    ]


def terminology() -> list[dict[str, Any]]:
    """A code system with a hierarchy and value sets over it and over LOINC, for token ``:in``,
    ``:not-in``, ``:above`` and ``:below`` (the R4 examples leave conformance resources out)."""
    return [
        {
            "resourceType": "CodeSystem",
            "id": "ff-codes",
            "url": f"{FF}/codes",
            "status": "active",
            "content": "complete",
            "hierarchyMeaning": "is-a",
            "concept": [
                {"code": "ff-sugar", "concept": [{"code": "ff-glucose"}, {"code": "ff-fructose"}]},
                {"code": "ff-salt"},
            ],
        },
        {
            "resourceType": "ValueSet",
            "id": "ff-sugars",
            "url": f"{FF}/vs/sugars",
            "version": "2",
            "status": "active",
            "compose": {"include": [{"system": f"{FF}/codes", "concept": [{"code": "ff-glucose"}]}]},
        },
        {
            "resourceType": "ValueSet",
            "id": "ff-heart",
            "url": f"{FF}/vs/heart",
            "status": "active",
            "expansion": {
                "timestamp": "2024-01-01T00:00:00Z",
                "contains": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
            },
        },
    ]


class FixtureTerminology:
    """:class:`fhirflow.query.terminology.Terminology` over :func:`terminology` (what the search
    service finds in the index, for the golden files that compile a query without one)."""

    def __init__(self) -> None:
        self.resources = terminology()

    def value_set(self, reference: str) -> dict[str, Any] | None:
        url, _, version = reference.partition("|")
        for resource in self.resources:
            if resource["resourceType"] != "ValueSet":
                continue
            if reference == f"ValueSet/{resource['id']}" or (
                resource["url"] == url and version in ("", resource.get("version"))
            ):
                return resource
        return None

    def code_system(self, url: str) -> dict[str, Any] | None:
        return next((r for r in self.resources if r["resourceType"] == "CodeSystem" and r["url"] == url), None)


def other_tenant_resources() -> list[dict[str, Any]]:
    """Copies of Patient/example and Observation/example that only the other tenant has."""
    patient = json.loads((EXAMPLES / "Patient-example.json").read_text(encoding="utf-8"))
    patient["name"] = [{"family": "Otherton", "given": ["Olga"]}]
    observation = json.loads((EXAMPLES / "Observation-example.json").read_text(encoding="utf-8"))
    return [patient, observation]


def batches() -> list[tuple[str, list[tuple[dict[str, Any], int]]]]:
    """(tenant, [(resource, lastUpdated ms)]) in the order they are indexed."""
    return [
        (TENANT, list(stamped(examples(), BASE_MS))),
        (TENANT, list(stamped(synthea(), BASE_MS + 10_000_000))),
        (TENANT, list(stamped(crafted() + terminology() + near_now(), BASE_MS + 20_000_000))),
        (OTHER_TENANT, list(stamped(other_tenant_resources(), BASE_MS))),
    ]


def near_now() -> list[dict[str, Any]]:
    """A Slot the day before the tables' fixed now (2024-06-10T06:13:20Z, conftest.NOW_MS), for the
    one-day floor of ``ap`` on dates (fhirflow/query/prefixes.py); last, so no other stamp moves."""
    return [
        {
            "resourceType": "Slot",
            "id": "ff-slot",
            "schedule": {"reference": "Schedule/example"},
            "status": "free",
            "start": "2024-06-09T08:00:00Z",
            "end": "2024-06-09T08:30:00Z",
        }
    ]


def load(db: SqliteDatabase) -> dict[str, int]:
    """Index the fixture into ``db``; returns how many resources each tenant got."""
    index = SqliteSearchIndex(db)
    counts: dict[str, int] = {}
    for tenant, batch in batches():
        with db.write():
            for resource, ms in batch:
                rtype, rid = resource["resourceType"], resource["id"]
                index.apply(tenant, rtype, rid, 1, ms, resource)  # joins this transaction, rows included
                counts[tenant] = counts.get(tenant, 0) + 1
    return counts


def load_opensearch(index: OpenSearchSearchIndex) -> int:
    """Index the same fixture through the OpenSearch adapter (its real document builder);
    returns how many documents it wrote. A second copy of a resource at the same version (the
    Synthea bundles share Organizations and Practitioners) is refused, as on SQLite."""
    written = 0
    for tenant, batch in batches():
        writes = [IndexWrite(tenant, r["resourceType"], r["id"], 1, ms, r) for r, ms in batch]
        for start in range(0, len(writes), 500):
            results = index.apply_batch(writes[start : start + 500])
            failed = [r for r in results if isinstance(r, Exception)]
            assert not failed, failed[:3]
            written += results.count(True)
    return written
