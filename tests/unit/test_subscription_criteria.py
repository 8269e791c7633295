"""Subscription criteria: parsing, refusals (400 naming the parameter and the element), the
comparison rules the conformance table does not reach, and the subscription index."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from fhirflow.errors import BadRequest
from fhirflow.searchparams.registry import Registry, default_registry
from fhirflow_subscriptions.criteria import RESULT_PARAMETERS, compile_criteria, parse_r4_criteria
from fhirflow_subscriptions.index import SubscriptionIndex

NOW_MS = 1_718_000_000_000  # 2024-06-10T06:13:20Z
LOINC = "http://loinc.org"
HR = {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}], "text": "Heart rate"}


def observation(id_: str = "o1", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": id_, "status": "final", "code": HR, **extra}


def refused(query: str, resource_type: str = "Observation", **kwargs: Any) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        compile_criteria(resource_type, query, **kwargs)
    return caught.value


# -- parse_r4_criteria ---------------------------------------------------------------------------


def test_r4_criteria_splits_type_and_query() -> None:
    assert parse_r4_criteria("Observation?code=http://loinc.org|8867-4") == (
        "Observation",
        "code=http://loinc.org|8867-4",
    )
    assert parse_r4_criteria("Patient") == ("Patient", "")
    assert parse_r4_criteria(" Patient?gender=male ") == ("Patient", "gender=male")


@pytest.mark.parametrize(
    "criteria",
    [
        "",
        "/Observation?code=x",
        "http://example.org/fhir/Observation?code=x",
        "[base]/Patient",
        "Observation/123",
        "Nope?x=1",
        "observation",
    ],
)
def test_r4_criteria_refuses_what_is_not_type_and_query(criteria: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_r4_criteria(criteria)
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == ("Subscription.criteria",)


def test_bare_type_matches_every_resource_of_the_type() -> None:
    compiled = compile_criteria("Patient", "")
    assert compiled.query == ""
    assert compiled.matches({"resourceType": "Patient", "id": "p"})
    assert not compiled.matches({"resourceType": "Observation", "id": "p"})


# -- refusals ---------------------------------------------------------------------------------------

RESULT_VALUES = {
    "_include": "Observation:subject",
    "_include:iterate": "Observation:subject",
    "_revinclude": "Provenance:target",
    "_sort": "date",
    "_count": "10",
    "_summary": "true",
    "_elements": "code",
    "_total": "accurate",
    "_contained": "true",
    "_containedType": "contained",
    "_type": "Observation",
    "_format": "json",
    "_pretty": "true",
    "_query": "x",
    "_filter": "code eq x",
}


def test_every_result_parameter_has_a_case() -> None:
    assert {name.partition(":")[0] for name in RESULT_VALUES} == RESULT_PARAMETERS


@pytest.mark.parametrize("name", sorted(RESULT_VALUES))
def test_result_parameters_are_refused(name: str) -> None:
    error = refused(f"code=8867-4&{name}={RESULT_VALUES[name]}", expression="Subscription.criteria")
    assert error.status == 400
    issue = error.issues[0]
    assert issue.expression == ("Subscription.criteria",)
    assert f"'{name}'" in issue.diagnostics or f"'{name.partition(':')[0]}'" in issue.diagnostics


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("nope=1", "nope"),  # unknown parameter
        ("code:nope=1", "code:nope"),  # unknown modifier
        ("date=xx2020", "date"),  # unknown prefix
        ("date=2020-13", "date"),  # not a date
        ("value-quantity=abc", "value-quantity"),  # not a number
        ("code=", "code"),  # no value
        ("subject:Patient.name=peter", "subject:Patient.name"),  # chain
        ("patient.name=peter", "patient.name"),
        ("_has:Observation:patient:code=1", "_has:Observation:patient:code"),
        ("_list=42", "_list"),
        ("code:in=http://example.org/vs", "code:in"),  # terminology, none given
        ("code:below=http://loinc.org|1", "code:below"),
        ("_id:exact=1", "_id:exact"),
        ("code-value-quantity=1", "code-value-quantity"),  # one component of two
    ],
)
def test_bad_criteria_name_the_parameter_and_the_element(query: str, named: str) -> None:
    expression = "Subscription.criteria.extension('http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria')"
    error = refused(query, expression=expression)
    assert error.status == 400
    assert error.issues[0].expression == (expression,)
    assert f"'{named}'" in error.issues[0].diagnostics


def test_near_with_an_unknown_unit_is_refused() -> None:
    error = refused("near=42|-83|1|furlong", "Location")
    assert "'near'" in error.issues[0].diagnostics


def test_unknown_type_is_refused() -> None:
    assert refused("", "Nope").status == 400


# -- semantics the conformance table does not reach ----------------------------------------------


def test_string_is_a_prefix_match_on_the_normalised_text() -> None:
    patient = {"resourceType": "Patient", "id": "p", "name": [{"family": "Chalmers", "given": ["Zoë"]}]}
    assert compile_criteria("Patient", "name=chal").matches(patient)
    assert compile_criteria("Patient", "given=ZOE").matches(patient)
    assert not compile_criteria("Patient", "name=halm").matches(patient)
    assert compile_criteria("Patient", "name:contains=halm").matches(patient)
    assert not compile_criteria("Patient", "name:exact=chalmers").matches(patient)
    assert compile_criteria("Patient", "name:exact=Chalmers").matches(patient)


def test_token_forms_and_not() -> None:
    obs = observation()
    assert compile_criteria("Observation", "code=8867-4").matches(obs)
    assert compile_criteria("Observation", f"code={LOINC}|8867-4").matches(obs)
    assert compile_criteria("Observation", f"code={LOINC}|").matches(obs)
    assert not compile_criteria("Observation", "code=|8867-4").matches(obs)  # it has a system
    assert not compile_criteria("Observation", "code:not=8867-4").matches(obs)
    assert compile_criteria("Observation", "category:not=vital-signs").matches(obs)  # no category at all
    assert compile_criteria("Observation", "code:text=heart").matches(obs)
    assert compile_criteria("Observation", "code:text=rate").matches(obs)
    assert not compile_criteria("Observation", "code:text=eart").matches(obs)


def test_dates_compare_ranges_and_ap_uses_now() -> None:
    obs = observation(effectiveDateTime="2024-06-01")
    assert compile_criteria("Observation", "date=2024-06").matches(obs)
    assert not compile_criteria("Observation", "date=2024-06-01T10:00").matches(obs)  # the day is wider
    assert compile_criteria("Observation", "date=ge2024-06-01").matches(obs)
    assert compile_criteria("Observation", "date=sa2024-05").matches(obs)
    assert not compile_criteria("Observation", "date=gt2024-06").matches(obs)
    near = compile_criteria("Observation", "date=ap2024-06-03")
    assert near.matches(obs, now_ms=NOW_MS + 10 * 365 * 86_400_000)  # 10% of ten years' distance: wide
    assert not near.matches(obs, now_ms=NOW_MS)  # a week away: the slack is a day


def test_quantities_with_units_and_comparators() -> None:
    ucum = "http://unitsofmeasure.org"
    obs = observation(valueQuantity={"value": 72, "unit": "beats/minute", "system": ucum, "code": "/min"})
    assert compile_criteria("Observation", f"value-quantity=72|{ucum}|/min").matches(obs)
    assert compile_criteria("Observation", "value-quantity=72||beats/minute").matches(obs)  # the unit as written
    assert not compile_criteria("Observation", f"value-quantity=72|{ucum}|kg").matches(obs)
    assert compile_criteria("Observation", "value-quantity=gt71.5").matches(obs)
    lower = observation(valueQuantity={"comparator": "<", "value": 5})
    assert compile_criteria("Observation", "value-quantity=lt5").matches(lower)
    assert not compile_criteria("Observation", "value-quantity=gt5").matches(lower)


def test_references_local_absolute_and_by_id() -> None:
    base = "https://fhir.example/r4"
    obs = observation(subject={"reference": f"{base}/Patient/p1"})
    assert compile_criteria("Observation", "subject=Patient/p1", base_url=base).matches(obs)
    assert compile_criteria("Observation", "subject=p1", base_url=base).matches(obs)
    assert not compile_criteria("Observation", "subject=Patient/p1").matches(obs)  # not ours without the base
    assert compile_criteria("Observation", f"subject={base}/Patient/p1", base_url=base).matches(obs)
    assert not compile_criteria("Observation", "subject=Group/p1", base_url=base).matches(obs)
    only_identifier = observation(subject={"identifier": {"system": "urn:mrn", "value": "7"}})
    assert compile_criteria("Observation", "subject:identifier=urn:mrn|7").matches(only_identifier)
    assert compile_criteria("Observation", "subject:missing=true").matches(only_identifier)


def test_composite_components_come_from_one_element() -> None:
    ucum = "http://unitsofmeasure.org"
    systolic = {"coding": [{"system": LOINC, "code": "8480-6"}]}
    diastolic = {"coding": [{"system": LOINC, "code": "8462-4"}]}
    bp = observation(
        component=[
            {"code": systolic, "valueQuantity": {"value": 120, "system": ucum, "code": "mm[Hg]"}},
            {"code": diastolic, "valueQuantity": {"value": 80, "system": ucum, "code": "mm[Hg]"}},
        ]
    )
    assert compile_criteria("Observation", "component-code-value-quantity=8480-6$120").matches(bp)
    assert not compile_criteria("Observation", "component-code-value-quantity=8480-6$80").matches(bp)


def test_lastupdated_id_and_text() -> None:
    obs = observation(
        meta={"lastUpdated": "2024-06-01T10:00:00Z"},
        text={"status": "generated", "div": "<div>Pulse <b>fast</b></div>"},
    )
    assert compile_criteria("Observation", "_lastUpdated=gt2024-06-01T09:00:00Z").matches(obs)
    assert not compile_criteria("Observation", "_lastUpdated=lt2024-06-01").matches(obs)
    assert compile_criteria("Observation", "_id=o1,o2").matches(obs)
    assert not compile_criteria("Observation", "_id:not=o1").matches(obs)
    assert compile_criteria("Observation", "_text=puls").matches(obs)
    assert not compile_criteria("Observation", "_text:exact=puls").matches(obs)
    assert compile_criteria("Observation", "_content=heart").matches(obs)


def test_terminology_modifiers_expand_once_with_a_terminology() -> None:
    class Terminology:
        def value_set(self, reference: str) -> dict[str, Any] | None:
            return {"resourceType": "ValueSet", "expansion": {"contains": [{"system": LOINC, "code": "8867-4"}]}}

        def code_system(self, url: str) -> dict[str, Any] | None:
            return None

    compiled = compile_criteria("Observation", "code:in=ValueSet/hr", terminology=Terminology())
    assert compiled.matches(observation())
    assert not compile_criteria("Observation", "code:not-in=ValueSet/hr", terminology=Terminology()).matches(
        observation()
    )


# -- runtime SearchParameters (the tenant's registry) ----------------------------------------------

MAIDEN = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"


def tenant_registry() -> Registry:
    return default_registry().with_custom(
        [
            {
                "resourceType": "SearchParameter",
                "url": "http://example.org/SearchParameter/mothers-maiden-name",
                "code": "mothers-maiden-name",
                "base": ["Patient"],
                "type": "string",
                "expression": f"Patient.extension.where(url='{MAIDEN}').value.as(string)",
            }
        ]
    )


class Catalog:
    """A SearchParamCatalog whose tenant "t1" has a searchable runtime parameter."""

    def __init__(self) -> None:
        self.registry = tenant_registry()

    def searchable_registry(self, tenant: str) -> Registry:
        return self.registry if tenant == "t1" else default_registry()

    def custom_params(self, tenant: str) -> tuple[Any, ...]:
        return ()


def test_runtime_search_parameters_of_the_tenant() -> None:
    catalog = Catalog()
    patient = {"resourceType": "Patient", "id": "p", "extension": [{"url": MAIDEN, "valueString": "Élodie"}]}
    compiled = compile_criteria("Patient", "mothers-maiden-name=elo", tenant="t1", catalog=catalog)  # type: ignore[arg-type]
    assert compiled.matches(patient)
    assert not compiled.matches({**patient, "extension": []})
    error = refused("mothers-maiden-name=elo", "Patient", tenant="t2", catalog=catalog)
    assert "'mothers-maiden-name'" in error.issues[0].diagnostics


# -- the index -----------------------------------------------------------------------------------

ALL = frozenset(("create", "update", "delete"))


def test_index_buckets_by_tenant_type_and_interaction() -> None:
    index = SubscriptionIndex()
    index.put(
        "hr",
        tenant="t",
        resource_type="Observation",
        interactions=ALL,
        criteria=[compile_criteria("Observation", "code=8867-4")],
    )
    index.put("any", tenant="t", resource_type="Observation", interactions=frozenset({"create"}), criteria=[])
    index.put("other-tenant", tenant="u", resource_type="Observation", interactions=ALL, criteria=[])
    index.put("patients", tenant="t", resource_type="Patient", interactions=ALL, criteria=[])
    assert len(index) == 4
    assert sorted(index.match(tenant="t", resource_type="Observation", operation="create", resource=observation())) == [
        "any",
        "hr",
    ]  # type: ignore[type-var]
    assert index.match(tenant="t", resource_type="Observation", operation="update", resource=observation()) == ["hr"]
    other = observation(code={"coding": [{"system": LOINC, "code": "1-1"}]})
    assert index.match(tenant="t", resource_type="Observation", operation="update", resource=other) == []
    assert index.match(tenant="t", resource_type="Observation", operation="delete", resource=None) == []
    assert index.match(tenant="x", resource_type="Observation", operation="create", resource=observation()) == []


def test_index_put_replaces_and_remove_forgets() -> None:
    index = SubscriptionIndex()
    index.put(
        "s",
        tenant="t",
        resource_type="Observation",
        interactions=ALL,
        criteria=[compile_criteria("Observation", "code=8867-4")],
    )
    index.put(
        "s",
        tenant="t",
        resource_type="Observation",
        interactions=ALL,
        criteria=[compile_criteria("Observation", "code=1-1")],
    )
    assert len(index) == 1
    assert index.match(tenant="t", resource_type="Observation", operation="create", resource=observation()) == []
    index.remove("s")
    index.remove("s")  # twice is fine
    assert len(index) == 0
    assert index.match(tenant="t", resource_type="Observation", operation="create", resource=observation()) == []


def test_index_criteria_are_anded_and_keys_only_narrow() -> None:
    index = SubscriptionIndex()
    both = [compile_criteria("Observation", "subject=Patient/p1"), compile_criteria("Observation", "code=8867-4")]
    index.put("both", tenant="t", resource_type="Observation", interactions=ALL, criteria=both)
    index.put(
        "scan",
        tenant="t",
        resource_type="Observation",
        interactions=ALL,
        criteria=[compile_criteria("Observation", "status:not=final")],
    )
    index.put(
        "or",
        tenant="t",
        resource_type="Observation",
        interactions=ALL,
        criteria=[compile_criteria("Observation", "code=x,8867-4")],
    )
    mine = observation(subject={"reference": "Patient/p1"})
    assert sorted(index.match(tenant="t", resource_type="Observation", operation="create", resource=mine)) == [
        "both",
        "or",
    ]  # type: ignore[type-var]
    theirs = observation(subject={"reference": "Patient/p2"}, status="amended")
    assert sorted(index.match(tenant="t", resource_type="Observation", operation="create", resource=theirs)) == [
        "or",
        "scan",
    ]  # type: ignore[type-var]


def test_index_refuses_criteria_on_another_type() -> None:
    with pytest.raises(ValueError):
        SubscriptionIndex().put(
            "s", tenant="t", resource_type="Patient", interactions=ALL, criteria=[compile_criteria("Observation", "")]
        )
    with pytest.raises(ValueError):
        SubscriptionIndex().put("s", tenant="t", resource_type="Patient", interactions=frozenset({"read"}), criteria=[])


def test_index_is_safe_under_concurrent_puts_and_matches() -> None:
    index = SubscriptionIndex()
    compiled = compile_criteria("Observation", "code=8867-4")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(300):
                index.put((n, i), tenant="t", resource_type="Observation", interactions=ALL, criteria=[compiled])
                if i % 2:
                    index.remove((n, i))
        except BaseException as error:
            errors.append(error)

    def reader() -> None:
        try:
            for _ in range(300):
                index.match(tenant="t", resource_type="Observation", operation="create", resource=observation())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)] + [
        threading.Thread(target=reader) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(index) == 3 * 150
    assert len(index.match(tenant="t", resource_type="Observation", operation="create", resource=observation())) == 450


def test_index_evaluates_only_the_candidates_a_change_can_match() -> None:
    """The cost of a change follows the subscriptions filed under its keys, not all of them."""
    evaluated: list[str] = []

    def counted(code: str) -> Any:
        compiled = compile_criteria("Observation", f"code={code}")
        spy = lambda facts: evaluated.append(code) or True  # noqa: E731 - a test spy
        return dataclasses.replace(compiled, tests=(spy, *compiled.tests))

    index = SubscriptionIndex()
    for n in range(50):
        index.put(n, tenant="t", resource_type="Observation", interactions=ALL, criteria=[counted(f"c{n}")])
    index.put("hr", tenant="t", resource_type="Observation", interactions=ALL, criteria=[counted("8867-4")])
    assert index.match(tenant="t", resource_type="Observation", operation="create", resource=observation()) == ["hr"]
    assert evaluated == ["8867-4"]


# -- chains and _has, with a resolver --------------------------------------------------------------


class Resolver:
    def __init__(self, *resources: dict[str, Any]) -> None:
        self.resources = list(resources)

    def read(self, resource_type: str, id_: str) -> dict[str, Any] | None:
        return next((r for r in self.resources if (r["resourceType"], r["id"]) == (resource_type, id_)), None)

    def referencing(self, source_type: str, param: str, target_type: str, target_id: str) -> list[dict[str, Any]]:
        refers = compile_criteria(source_type, f"{param}={target_type}/{target_id}")
        return [r for r in self.resources if r["resourceType"] == source_type and refers.matches(r)]


def test_chains_and_has_match_through_the_resolver() -> None:
    peter = {"resourceType": "Patient", "id": "p1", "name": [{"given": ["Peter"]}]}
    obs = observation(subject={"reference": "Patient/p1"})
    resolver = Resolver(peter, obs)
    chain = compile_criteria("Observation", "subject:Patient.name=peter", chains=True)
    assert chain.needs_resolver
    assert chain.matches(obs, resolver=resolver)
    assert not chain.matches(observation(subject={"reference": "Patient/p2"}), resolver=resolver)
    has = compile_criteria("Patient", "_has:Observation:subject:code=8867-4", chains=True)
    assert has.matches(peter, resolver=resolver)
    assert not has.matches({**peter, "id": "p2"}, resolver=resolver)
    assert not compile_criteria("Observation", "code=8867-4", chains=True).needs_resolver


def test_chains_need_a_resolver_when_matched() -> None:
    chain = compile_criteria("Observation", "subject:Patient.name=peter", chains=True)
    with pytest.raises(ValueError):
        chain.matches(observation(subject={"reference": "Patient/p1"}))
    index = SubscriptionIndex()
    index.put("s", tenant="t", resource_type="Observation", interactions=ALL, criteria=[chain])
    peter = {"resourceType": "Patient", "id": "p1", "name": [{"given": ["Peter"]}]}
    obs = observation(subject={"reference": "Patient/p1"})
    assert index.match(
        tenant="t", resource_type="Observation", operation="create", resource=obs, resolver=Resolver(peter)
    ) == ["s"]


def test_chains_nest_at_most_eight_levels() -> None:
    assert compile_criteria("Observation", "subject:Patient.organization" + ".partof" * 6 + ".name=x", chains=True)
    error = refused("subject:Patient.organization" + ".partof" * 7 + ".name=x", chains=True)
    assert error.issues[0].code == "too-costly"


def test_list_membership_through_the_resolver() -> None:
    members = {"resourceType": "List", "id": "l1", "status": "current", "mode": "working"}
    members["entry"] = [{"item": {"reference": "Observation/o1"}}]
    in_list = compile_criteria("Observation", "_list=l1", chains=True)
    assert in_list.needs_resolver
    assert in_list.matches(observation("o1"), resolver=Resolver(members))
    assert not in_list.matches(observation("o2"), resolver=Resolver(members))
    assert not in_list.matches(observation("o1"), resolver=Resolver())
    assert "'_list'" in refused("_list=$current-allergies", chains=True).issues[0].diagnostics


def test_subscriptions_sharing_a_filter_share_one_test_run_once_per_change() -> None:
    """Thousands of subscriptions about one patient: the patient's filter is one compiled test, and
    a change runs it once however many candidates hold it (``Facts.memo``)."""
    first = compile_criteria("Observation", "subject=Patient/p1&code=8867-4")
    second = compile_criteria("Observation", "subject=Patient/p1&code=other")
    assert first.tests[0] is second.tests[0]
    assert first.tests[1] is not second.tests[1]
    runs: list[str] = []
    shared = first.tests[0]

    def spy(facts: Any) -> bool:
        runs.append("subject")
        return shared(facts)

    index = SubscriptionIndex()
    for n in range(20):
        code = "8867-4" if n == 7 else f"c{n}"
        compiled = compile_criteria("Observation", f"subject=Patient/p1&code={code}")
        index.put(
            n,
            tenant="t",
            resource_type="Observation",
            interactions=ALL,
            criteria=[dataclasses.replace(compiled, tests=(spy, *compiled.tests[1:]))],
        )
    resource = {**observation(), "subject": {"reference": "Patient/p1"}}
    assert index.match(tenant="t", resource_type="Observation", operation="create", resource=resource) == [7]
    assert runs == ["subject"]


def test_date_and_number_prefixes_compiled_once_agree_with_the_definition() -> None:
    """The prefixes are compiled with the criteria (not re-derived per value): every prefix on a
    date and a number gives what ``prefixes.holds`` says for the same range."""
    from fhirflow.query import prefixes
    from fhirflow_subscriptions.criteria import _range_check

    resource = {
        "resourceType": "Observation",
        "id": "o",
        "status": "final",
        "code": {"text": "x"},
        "effectivePeriod": {"start": "2020-03-01", "end": "2020-05-31"},
        "valueInteger": 7,
    }
    for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"):
        for date in ("2020", "2020-04", "2020-03-01", "2019", "2021-01-01"):
            compiled = compile_criteria("Observation", f"date={prefix}{date}")
            query = compiled_query_value("Observation", f"date={prefix}{date}")
            expected = prefixes.holds(prefixes.date_condition(query, 0), *date_bounds(resource))
            assert compiled.matches(resource, now_ms=0) is expected, (prefix, date)
    for low, high in ((1, 1), (5, 9), (3, 12)):
        for condition in (
            prefixes.date_condition(compiled_query_value("Observation", "date=ge2020"), 0),
            prefixes.date_condition(compiled_query_value("Observation", "date=ne2020-04"), 0),
        ):
            assert _range_check(condition)(low, high) is prefixes.holds(condition, low, high)


def compiled_query_value(rtype: str, query: str) -> Any:
    from urllib.parse import parse_qsl

    from fhirflow.query.parser import parse

    return parse(rtype, parse_qsl(query), strict=True).criteria[0].values[0]


def date_bounds(resource: dict[str, Any]) -> tuple[int, int]:
    from fhirflow.searchparams.extract import extract_index_values

    (value,) = extract_index_values(resource)["date"]
    return value.low, value.high
