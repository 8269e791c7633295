"""Conditional entries and conditional references in a batch or transaction.

- ``request.ifNoneExist`` on a POST, and a search in the ``request.url`` of a PUT, DELETE or PATCH
  (``Patient?identifier=...``), are conditional create, update, delete and patch
  (http://hl7.org/fhir/R4/bundle.html#transaction, http.html#ccreate ...). They resolve as the crud
  service's conditional use cases do (:func:`fhirflow.conditional.resolve`), with the same uniqueness
  key, so a conditional create in a bundle is exactly as race-free as one on its own.
- A reference written as a search (``"reference": "Patient?identifier=http://x|123"``) is replaced
  by the one resource the search finds (http.html#trules); none or several is a 412 naming the entry.

In a transaction all of it is resolved by search before any entry runs (the transaction's own
writes are not visible to those searches): a conditional create that finds its resource resolves
to it, and references to its ``fullUrl`` then point at that resource. In a batch each entry
resolves its own, and only that entry fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhirflow.conditional import (
    Criteria,
    Resolution,
    conditional_reference,
    parse_criteria,
    parse_query_string,
    resolve,
)
from fhirflow.errors import BadRequest, FhirError, PreconditionFailed
from fhirflow.model import FhirRequest
from fhirflow.runtime import Dependencies
from fhirflow.validation import is_resource_type
from fhirflow_bundle.entries import Entry, entry_failure
from fhirflow_bundle.references import conditional_references


def entry_criteria(entry: Entry) -> Criteria | None:
    """The criteria of a conditional entry, strictly parsed (a 400 names the entry's element)."""
    rtype = entry.resource_type
    if entry.method == "POST":
        raw = entry.request.get("ifNoneExist")
        if raw is None:
            return None
        where = f"{entry.where}.request.ifNoneExist"
        if not isinstance(raw, str):
            raise BadRequest(f"{where} must be a string of search parameters", expression=where)
        return parse_query_string(rtype, raw, where=where, label="request.ifNoneExist")
    if entry.method in ("PUT", "DELETE", "PATCH") and entry.path.count("/") == 1 and is_resource_type(rtype):
        where = f"{entry.where}.request.url"
        return parse_criteria(rtype, list(entry.query), text=entry.url, where=where, label="request.url")
    return None


def search_request(outer: FhirRequest, rtype: str) -> FhirRequest:
    """A type search on behalf of the bundle's principal (authorized and filtered as such)."""
    return FhirRequest(
        method="GET",
        path=f"/{rtype}",
        route="/{type}",
        path_params={"type": rtype},
        headers={"accept": "application/fhir+json"},
        base_url=outer.base_url,
        tenant=outer.tenant,
        request_id=outer.request_id,
        source_ip=outer.source_ip,
        principal=outer.principal,
    )


def resolve_references(deps: Dependencies, outer: FhirRequest, entry: Entry, found: list[str]) -> dict[str, str]:
    """Each conditional reference of ``entry`` → ``Type/id`` of the one resource it finds (else 412)."""
    mapping: dict[str, str] = {}
    where = f"{entry.where}.resource"
    for reference in dict.fromkeys(found):
        parsed = conditional_reference(reference)
        assert parsed is not None
        rtype, query = parsed
        if not is_resource_type(rtype):
            raise BadRequest(
                f"{entry.where}: the conditional reference '{reference[:120]}' names no known resource type",
                expression=where,
            )
        criteria = parse_query_string(rtype, query, where=where, label=f"the conditional reference '{reference[:120]}'")
        matches = resolve(deps, search_request(outer, rtype), criteria).matches
        if len(matches) != 1:
            how = "no" if not matches else "more than one"
            raise PreconditionFailed(
                f"{entry.where}: the conditional reference '{reference[:120]}' matches {how} {rtype}; "
                "it must match exactly one",
                expression=where,
            )
        mapping[reference] = f"{rtype}/{matches[0].id}"
    return mapping


@dataclass
class TransactionPlan:
    """What a transaction's conditional entries resolved to, before any entry runs."""

    resolutions: dict[int, Resolution] = field(default_factory=dict)
    """Entry index → what its criteria found."""
    references: dict[str, str] = field(default_factory=dict)
    """Conditional reference → ``Type/id``."""


def plan_transaction(deps: Dependencies, outer: FhirRequest, entries: list[Entry]) -> TransactionPlan:
    """Resolve every conditional entry and reference of a transaction; the first failure (a 400 for
    bad criteria, a 412 for a reference that does not match exactly one) fails it, naming the entry."""
    plan = TransactionPlan()
    claimed: dict[str, Entry] = {}
    for entry in entries:
        try:
            criteria = entry_criteria(entry)
            if criteria is not None:
                resolution = resolve(deps, search_request(outer, criteria.resource_type), criteria)
                plan.resolutions[entry.index] = resolution
                if entry.method in ("POST", "PUT") and not resolution.matches:
                    other = claimed.setdefault(resolution.key, entry)
                    if other is not entry:
                        raise BadRequest(
                            f"{entry.where} and {other.where} have the same conditional criteria and would both "
                            "create the resource; a transaction may create it once",
                            expression=entry.where,
                        )
            if entry.resource is not None:
                found = [r for r in conditional_references(entry.resource) if r not in plan.references]
                plan.references.update(resolve_references(deps, outer, entry, found))
        except FhirError as error:
            raise entry_failure(error, entry) from error
    return plan
