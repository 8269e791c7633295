"""Subscription matching agrees with search, over the search conformance table (issue 12).

For every row of ``cases.py`` usable as subscription criteria, the fixture resources that the
compiled criteria match are exactly the ones the search service returns for the same query. A row
is usable when it is a type search that answers 200 without leaving a parameter out; result
parameters that only order, page or trim the answer (``_sort``, ``_count``, ``_total``,
``_summary``, ``_elements``, ``_include``, ``_revinclude``) are dropped from both sides, since
they do not change which resources match. Chains and ``_has`` are compiled with ``chains=True`` and
matched with a resolver over the fixture (read by id; the resources that refer to one, found with
the matcher's own reference rule, itself checked by the reference rows). Rows the matcher refuses
(``_contained``) are skipped with the reason; ``test_rows_checked`` prints the counts. The error
rows of a type search are checked the other way: the criteria are refused too, naming the same
parameter.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from fhirflow.errors import BadRequest
from fhirflow.http import Application
from fhirflow_subscriptions.criteria import CompiledCriteria, compile_criteria
from tests.search import fixtures
from tests.search.cases import CASES, Case
from tests.search.client import BASE_URL
from tests.search.conftest import NOW_MS
from tests.search.test_conformance import send, walk

ORDER_ONLY = frozenset(("_sort", "_count", "_total", "_summary", "_elements", "_include", "_revinclude"))
MIN_CHECKED = 80
"""Rows this test must check: a floor that fails if the matcher stops covering the table."""


@cache
def resources_by_tenant() -> dict[str, list[dict[str, Any]]]:
    """The fixture as ``fixtures.load`` indexes it (same ids, versions and lastUpdated)."""
    batches = [
        (fixtures.TENANT, fixtures.stamped(fixtures.examples(), fixtures.BASE_MS)),
        (fixtures.TENANT, fixtures.stamped(fixtures.synthea(), fixtures.BASE_MS + 10_000_000)),
        (fixtures.TENANT, fixtures.stamped(fixtures.crafted() + fixtures.terminology(), fixtures.BASE_MS + 20_000_000)),
        (fixtures.OTHER_TENANT, fixtures.stamped(fixtures.other_tenant_resources(), fixtures.BASE_MS)),
    ]
    out: dict[str, list[dict[str, Any]]] = {}
    for tenant, batch in batches:
        out.setdefault(tenant, []).extend(resource for resource, _ in batch)
    return out


class FixtureResolver:
    """:class:`fhirflow_subscriptions.criteria.Resolver` over one tenant's fixture resources."""

    def __init__(self, tenant: str) -> None:
        self.resources = resources_by_tenant()[tenant]
        self.by_id = {(r["resourceType"], r["id"]): r for r in self.resources}
        self.referrers: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}

    def read(self, resource_type: str, id_: str) -> Mapping[str, Any] | None:
        return self.by_id.get((resource_type, id_))

    def referencing(
        self, source_type: str, param: str, target_type: str, target_id: str
    ) -> Iterable[Mapping[str, Any]]:
        key = (source_type, param, target_type, target_id)
        found = self.referrers.get(key)
        if found is None:
            refers = compile_criteria(source_type, f"{param}={target_type}/{target_id}", base_url=BASE_URL)
            found = [r for r in self.resources if r["resourceType"] == source_type and refers.matches(r)]
            self.referrers[key] = found
        return found


@cache
def resolver_for(tenant: str) -> FixtureResolver:
    return FixtureResolver(tenant)


def criteria_for(case: Case) -> tuple[CompiledCriteria | None, str]:
    """The row's criteria compiled (None and the reason when the row is not usable as criteria)
    and the query both sides run."""
    if case.status != 200:
        return None, "an error row"
    if case.resource_type is None:
        return None, "a system search"
    if case.compartment is not None:
        return None, "a compartment search"
    if case.warning is not None:
        return None, "a lenient row that leaves a parameter out"
    kept = [(n, v) for n, v in parse_qsl(case.query, keep_blank_values=True) if n.partition(":")[0] not in ORDER_ONLY]
    query = urlencode(kept)
    try:
        compiled = compile_criteria(
            case.resource_type,
            query,
            tenant=case.tenant or fixtures.TENANT,
            terminology=fixtures.FixtureTerminology(),
            base_url=BASE_URL,
            chains=True,
        )
    except BadRequest as refused:
        return None, f"refused: {refusal_kind(refused.diagnostics)}"
    return compiled, query


def refusal_kind(diagnostics: str) -> str:
    for needle, kind in (
        ("chained parameters, _has and _list", "chain, _has or _list"),
        ("'_contained'", "_contained"),
        ("terminology", "needs a terminology service"),
    ):
        if needle in diagnostics:
            return kind
    return diagnostics


def matched(compiled: CompiledCriteria, tenant: str) -> list[str]:
    return sorted(
        f"{r['resourceType']}/{r['id']}"
        for r in resources_by_tenant()[tenant]
        if r["resourceType"] == compiled.resource_type
        and compiled.matches(r, now_ms=NOW_MS, resolver=resolver_for(tenant))
    )


ERROR_ROWS = [c for c in CASES if c.status == 400 and c.resource_type is not None and c.compartment is None]


@pytest.mark.parametrize("case", ERROR_ROWS, ids=[case.id for case in ERROR_ROWS])
def test_criteria_refuse_what_search_refuses(case: Case) -> None:
    with pytest.raises(BadRequest) as caught:
        compile_criteria(case.resource_type or "", case.query, expression="Subscription.criteria", chains=True)
    issue = caught.value.issues[0]
    assert issue.expression == ("Subscription.criteria",)
    assert f"'{case.error_param}'" in issue.diagnostics


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_matching_agrees_with_search(search_app: Application, case: Case) -> None:
    compiled, query = criteria_for(case)
    if compiled is None:
        pytest.skip(query)
    reply = send(search_app, dataclasses.replace(case, query=query), {})
    _, resources, _ = walk(search_app, reply, {})
    searched = sorted(f"{r['resourceType']}/{r['id']}" for r in resources)
    assert matched(compiled, case.tenant or fixtures.TENANT) == searched


def test_rows_checked(capsys: pytest.CaptureFixture[str]) -> None:
    """How many rows the agreement test checks, and why the others are skipped."""
    if not fixtures.EXAMPLES.exists() or not fixtures.SYNTHEA.exists():
        pytest.skip(f"the HL7 examples and Synthea bundles are not under {fixtures.SHARED}")
    reasons: Counter[str] = Counter()
    nonempty = 0
    for case in CASES:
        compiled, reason = criteria_for(case)
        reasons["checked" if compiled is not None else reason] += 1
        if case in ERROR_ROWS:
            reasons["an error row"] -= 1
            reasons["error rows: the criteria are refused as the search refuses them (test_criteria_refuse...)"] += 1
        if compiled is not None and matched(compiled, case.tenant or fixtures.TENANT):
            nonempty += 1
    with capsys.disabled():
        print(
            f"\nsubscription matching vs search: {reasons['checked']} of {len(CASES)} conformance rows checked "
            f"({nonempty} with matches)"
        )
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
            if reason != "checked" and count:
                print(f"  {count:3d}: {reason}")
    assert reasons["checked"] >= MIN_CHECKED
