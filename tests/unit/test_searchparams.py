"""The search parameter registry, index value extraction and compartments."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fhirflow.errors import InvalidResource
from fhirflow.searchparams import fhirpath
from fhirflow.searchparams.compartments import compartments_of
from fhirflow.searchparams.compiler import TypeModel, compile_part
from fhirflow.searchparams.dates import date_range, format_ms
from fhirflow.searchparams.extract import Extractor, extract_index_values, index_document
from fhirflow.searchparams.paths import walk
from fhirflow.searchparams.registry import default_registry
from fhirflow.searchparams.values import (
    DATE_MAX,
    DATE_MIN,
    CompositeValue,
    DateValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    decimal_range,
    normalize_string,
)

SHARED = Path(__file__).resolve().parents[3] / "shared"
EXAMPLES = SHARED / "fhir-r4" / "examples"
needs_shared = pytest.mark.skipif(not EXAMPLES.is_dir(), reason="../shared/fhir-r4/examples is not available")


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


def dates(text: str) -> tuple[str, str]:
    found = date_range(text)
    assert found is not None
    return format_ms(found[0]), format_ms(found[1])


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry_counts_are_sane():
    registry = default_registry()
    assert len(registry.resource_types) >= 140
    assert {"Patient", "Observation", "Bundle", "Binary"} <= registry.resource_types
    assert registry.non_domain == {"Binary", "Bundle", "Parameters"}
    total = sum(len(by_code) for by_code in registry.params.values())
    assert total > 1300
    assert len(registry.params_for("Patient")) > 25
    assert len(registry.params_for("Observation")) > 40


def test_known_parameters():
    registry = default_registry()
    birthdate = registry.get("Patient", "birthdate")
    assert birthdate is not None
    assert (birthdate.type, birthdate.expression) == ("date", "Patient.birthDate")
    code = registry.get("Observation", "code")
    assert code is not None
    assert code.type == "token"
    assert code.expression == "Observation.code"
    subject = registry.get("Observation", "subject")
    assert subject is not None
    assert subject.type == "reference"
    assert {"Patient", "Group", "Device", "Location"} <= set(subject.targets)
    composite = registry.get("Observation", "code-value-quantity")
    assert composite is not None
    assert composite.type == "composite"
    assert [(c.code, c.type) for c in composite.components] == [("code", "token"), ("value-quantity", "quantity")]


def test_multi_base_expressions_are_split_per_type():
    registry = default_registry()
    clinical_code = registry.get("Condition", "code")
    assert clinical_code is not None
    assert clinical_code.expression == "Condition.code"
    date = registry.get("Observation", "date")
    assert date is not None
    assert date.expression == "Observation.effective"


def test_common_parameters():
    registry = default_registry()
    for code, ptype in (("_id", "token"), ("_lastUpdated", "date"), ("_tag", "token"), ("_profile", "uri")):
        param = registry.get("Observation", code)
        assert param is not None
        assert param.type == ptype
        assert param.is_common
    assert registry.get("Patient", "_text") is not None
    assert registry.get("Bundle", "_text") is None  # not a DomainResource
    list_param = registry.get("Patient", "_list")
    assert list_param is not None
    assert list_param.type == "special"
    assert registry.get("Patient", "no-such-param") is None


def test_compartment_definitions():
    registry = default_registry()
    assert set(registry.compartment_types()) == {"Patient", "Encounter", "RelatedPerson", "Practitioner", "Device"}
    assert registry.compartment_params("Patient", "Observation") == ("subject", "performer")
    assert "{def}" not in registry.compartment_params("Encounter", "Encounter")


def test_custom_search_parameter():
    custom = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/SearchParameter/mothers-maiden-name",
        "code": "mothers-maiden-name",
        "base": ["Patient"],
        "type": "string",
        "expression": "Patient.extension.where(url='http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName')"
        ".value.as(string)",
    }
    registry = default_registry().with_custom([custom])
    param = registry.get("Patient", "mothers-maiden-name")
    assert param is not None
    assert param.custom
    assert param.parts[0].steps is not None
    assert default_registry().get("Patient", "mothers-maiden-name") is None
    patient = {
        "resourceType": "Patient",
        "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName", "valueString": "Élodie"},
            {"url": "http://example.org/other", "valueString": "no"},
        ],
    }
    values = extract_index_values(patient, registry=registry)
    assert values["mothers-maiden-name"] == [StringValue("Élodie", "elodie")]


def test_invalid_custom_search_parameter():
    with pytest.raises(InvalidResource):
        default_registry().with_custom([{"resourceType": "SearchParameter", "code": "x", "base": ["Nope"]}])
    with pytest.raises(InvalidResource):
        default_registry().with_custom(
            [{"resourceType": "SearchParameter", "code": "x", "base": ["Patient"], "type": "token"}]
        )


def test_importing_the_packages_loads_nothing_heavy():
    code = (
        "import sys, fhirflow.searchparams, fhirflow.query;"
        "heavy = [m for m in ('fhirpathpy', 'fhirflow.searchparams.registry', 'fhirflow.query.parser') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Values


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2013", "2013-01-01T00:00:00.000Z", "2013-12-31T23:59:59.999Z"),
        ("2012-02", "2012-02-01T00:00:00.000Z", "2012-02-29T23:59:59.999Z"),
        ("2013-01-14", "2013-01-14T00:00:00.000Z", "2013-01-14T23:59:59.999Z"),
        ("2013-01-14T10:00", "2013-01-14T10:00:00.000Z", "2013-01-14T10:00:59.999Z"),
        ("2013-01-14T10:00:00+10:00", "2013-01-14T00:00:00.000Z", "2013-01-14T00:00:00.999Z"),
        ("2013-01-14T10:00:00.5Z", "2013-01-14T10:00:00.500Z", "2013-01-14T10:00:00.599Z"),
        ("2013-01-14T10:00:00.123456Z", "2013-01-14T10:00:00.123Z", "2013-01-14T10:00:00.123Z"),
    ],
)
def test_date_ranges(text, low, high):
    assert dates(text) == (low, high)


@pytest.mark.parametrize("text", ["2013-13", "2013-02-30", "2013-01-14T24:00Z", "13", "2013-01-14T10:00+15:00", ""])
def test_malformed_dates(text):
    assert date_range(text) is None


def test_normalize_and_decimal_range():
    assert normalize_string("  Éloïse   O'Brien ") == "eloise o'brien"
    assert decimal_range(Decimal(100)) == (Decimal("99.5"), Decimal("100.5"))
    assert decimal_range(Decimal("100.00")) == (Decimal("99.995"), Decimal("100.005"))


# ---------------------------------------------------------------------------------------------
# Extraction


@needs_shared
def test_patient_example_values():
    values = extract_index_values(example("Patient-example.json"))
    assert StringValue("Chalmers", "chalmers") in values["family"]
    assert StringValue("Chalmers", "chalmers") in values["name"]
    assert values["birthdate"] == [DateValue(*date_range("1974-12-25"))]  # type: ignore[misc]
    assert values["gender"] == [TokenValue(None, "male")]
    identifier = values["identifier"][0]
    assert isinstance(identifier, TokenValue)
    assert (identifier.system, identifier.code) == ("urn:oid:1.2.36.146.595.217.0.1", "12345")
    assert identifier.of_type == (("http://terminology.hl7.org/CodeSystem/v2-0203", "MR"),)
    assert TokenValue("work", "(03) 5555 6473") in values["phone"]
    assert values["organization"] == [ReferenceValue("Organization", "1")]
    assert values["_id"] == [TokenValue(None, "example")]


@needs_shared
def test_observation_example_values():
    values = extract_index_values(example("Observation-example.json"))
    quantity = QuantityValue(
        Decimal(185), Decimal("184.5"), Decimal("185.5"), "http://unitsofmeasure.org", "[lb_av]", "lbs"
    )
    assert values["value-quantity"] == [quantity]
    assert TokenValue("http://loinc.org", "29463-7", "body weight") in values["code"]
    assert (
        CompositeValue((TokenValue("http://loinc.org", "29463-7", "body weight"), quantity))
        in values["code-value-quantity"]
    )
    assert values["subject"] == [ReferenceValue("Patient", "example")]
    assert values["date"] == [DateValue(*date_range("2016-03-28"))]  # type: ignore[misc]


def test_dates_from_periods_and_timing():
    procedure = {"resourceType": "Procedure", "performedPeriod": {"start": "2020-01-01"}}
    assert extract_index_values(procedure)["date"] == [DateValue(date_range("2020-01-01")[0], DATE_MAX)]  # type: ignore[index]
    ended = {"resourceType": "Encounter", "period": {"end": "2020-01"}}
    assert extract_index_values(ended)["date"] == [DateValue(DATE_MIN, date_range("2020-01")[1])]  # type: ignore[index]
    timed = {"resourceType": "Observation", "effectiveTiming": {"event": ["2020-03-01", "2020-01-05T10:00:00Z"]}}
    low, high = date_range("2020-01-05T10:00:00Z")[0], date_range("2020-03-01")[1]  # type: ignore[index]
    assert extract_index_values(timed)["date"] == [DateValue(low, high)]


def test_quantities_money_ranges_and_comparators():
    below = {"resourceType": "Observation", "valueQuantity": {"value": 5, "comparator": "<", "code": "mg"}}
    [value] = extract_index_values(below)["value-quantity"]
    assert isinstance(value, QuantityValue)
    assert value.low == Decimal("-Infinity")
    assert value.high == Decimal("5.5")
    claim = {"resourceType": "ChargeItem", "priceOverride": {"value": 12.5, "currency": "EUR"}}
    [money] = extract_index_values(claim)["price-override"]
    assert money == QuantityValue(
        Decimal("12.5"), Decimal("12.45"), Decimal("12.55"), "urn:iso:std:iso:4217", "EUR", "EUR"
    )
    risk = {"resourceType": "RiskAssessment", "prediction": [{"probabilityRange": {"low": {"value": 0.2}}}]}
    assert extract_index_values(risk)["probability"] == [NumberValue(None, Decimal("0.2"), Decimal("Infinity"))]


def test_reference_forms():
    observation = {
        "resourceType": "Observation",
        "performer": [
            {"reference": "Practitioner/p1/_history/3"},
            {"reference": "http://other.org/fhir/Organization/o1"},
            {"reference": "urn:uuid:5b1e7f7c-5f1d-4c0b-9a1e-0c5d3c1e2f3a"},
            {"reference": "#contained"},
            {"identifier": {"system": "http://npi", "value": "123"}, "type": "Practitioner"},
        ],
    }
    assert extract_index_values(observation)["performer"] == [
        ReferenceValue("Practitioner", "p1", "3"),
        ReferenceValue("Organization", "o1", None, "http://other.org/fhir/Organization/o1"),
        ReferenceValue(None, None, None, "urn:uuid:5b1e7f7c-5f1d-4c0b-9a1e-0c5d3c1e2f3a"),
        ReferenceValue("Practitioner", None, None, None, "http://npi", "123"),
    ]
    response = {"resourceType": "QuestionnaireResponse", "questionnaire": "http://example.org/Questionnaire/q|2.0"}
    assert extract_index_values(response)["questionnaire"] == [
        ReferenceValue(None, None, "2.0", "http://example.org/Questionnaire/q")
    ]


def test_special_and_uri_values():
    location = {"resourceType": "Location", "position": {"latitude": 42.25, "longitude": -83.7}}
    [position] = extract_index_values(location)["near"]
    assert position == (Decimal("42.25"), Decimal("-83.7"))
    meta = {
        "profile": ["http://p"],
        "tag": [{"system": "http://t", "code": "x", "display": "Ex"}],
        "security": [{"system": "http://s", "code": "R"}],
        "source": "http://src#1",
        "lastUpdated": "2021-01-01T00:00:00Z",
    }
    values = extract_index_values({"resourceType": "ValueSet", "id": "v", "url": "http://example.org/vs", "meta": meta})
    assert values["url"] == [UriValue("http://example.org/vs")]
    assert values["_profile"] == [UriValue("http://p")]
    assert values["_tag"] == [TokenValue("http://t", "x", "ex")]
    assert values["_security"] == [TokenValue("http://s", "R")]
    assert values["_source"] == [UriValue("http://src#1")]
    assert values["_lastUpdated"] == [DateValue(*date_range("2021-01-01T00:00:00Z"))]  # type: ignore[misc]
    assert values["_id"] == [TokenValue(None, "v")]


def test_deceased_flag():
    assert extract_index_values({"resourceType": "Patient"})["deceased"] == [TokenValue(None, "false")]
    dead = {"resourceType": "Patient", "deceasedDateTime": "2020-01-01"}
    assert extract_index_values(dead)["deceased"] == [TokenValue(None, "true")]


def test_malformed_elements_are_skipped_not_fatal():
    patient = {
        "resourceType": "Patient",
        "name": [{"family": ["x"], "given": [1, None, "Ann"]}, "Bob", 7],
        "identifier": [{"system": {}, "value": "1", "type": {"coding": 5}}, None],
        "telecom": [{"system": "phone", "use": [], "value": "555"}],
        "birthDate": "1999-02-30",
        "generalPractitioner": [{"reference": 5}, {"reference": "#x"}, "Practitioner/1"],
        "managingOrganization": {"resourceType": 3},
    }
    values = extract_index_values(patient)
    assert values["given"] == [StringValue("Ann", "ann")]
    assert values["identifier"] == [TokenValue(None, "1")]
    assert values["phone"] == [TokenValue(None, "555")]
    assert "birthdate" not in values
    assert "general-practitioner" not in values
    assert "organization" not in values


def test_index_document():
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "meta": {"versionId": "2", "lastUpdated": "2021-05-01T10:00:00Z"},
        "text": {"status": "generated", "div": "<div xmlns='http://www.w3.org/1999/xhtml'><p>Hb &amp; more</p></div>"},
        "subject": {"reference": "Patient/p1"},
        "encounter": {"reference": "Encounter/e1"},
        "status": "final",
    }
    doc = index_document(observation)
    assert (doc.resource_type, doc.id, doc.version_id) == ("Observation", "o1", "2")
    assert doc.last_updated == date_range("2021-05-01T10:00:00Z")[0]  # type: ignore[index]
    assert doc.text == "Hb & more"
    assert set(doc.compartments) == {("Patient", "p1"), ("Encounter", "e1")}
    assert doc.values["status"] == [TokenValue(None, "final")]


# ---------------------------------------------------------------------------------------------
# Compartments


@needs_shared
def test_compartments_of_examples():
    assert set(compartments_of(example("Observation-example.json"))) == {
        ("Patient", "example"),
        ("Encounter", "example"),
    }
    assert compartments_of(example("Patient-example.json")) == [("Patient", "example")]


def test_compartments_via_performer_and_absolute_urls():
    observation = {
        "resourceType": "Observation",
        "subject": {"reference": "https://fhir.example.org/r4/Patient/p1"},
        "performer": [{"reference": "Patient/p2"}, {"reference": "Practitioner/d1"}],
    }
    assert set(compartments_of(observation)) == {("Patient", "p2"), ("Practitioner", "d1")}
    with_base = compartments_of(observation, base_url="https://fhir.example.org/r4")
    assert ("Patient", "p1") in with_base


# ---------------------------------------------------------------------------------------------
# Compiled paths against fhirpathpy


def _plain(value: Any) -> Any:
    """JSON numbers as Decimal: fhirpathpy returns decimals where the walk returns floats."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def test_compiler_handles_the_official_shapes():
    model = TypeModel.r4()
    compiled = compile_part("(Observation.value as Quantity)", model)
    assert compiled is not None
    assert compiled.steps == (("f", ("valueQuantity",)),)
    compiled = compile_part("Patient.telecom.where(system='phone')", model)
    assert compiled is not None
    assert compiled.steps[-1] == ("w", "system", "phone")
    assert compiled.hint == "ContactPoint"
    compiled = compile_part("Observation.subject.where(resolve() is Patient)", model)
    assert compiled is not None
    assert compiled.steps[-1] == ("r", "Patient")
    assert compile_part("Patient.name.select(given)", model) is None
    resource = {"resourceType": "Observation", "subject": {"reference": "Group/g"}, "valueQuantity": {"value": 1}}
    assert walk(resource, compile_part("Observation.subject.where(resolve() is Patient)", model).steps) == []  # type: ignore[union-attr]


@needs_shared
def test_compiled_paths_match_fhirpathpy_on_all_examples():
    registry = default_registry()
    fast, reference = Extractor(registry), Extractor(registry, force_fhirpath=True)
    mismatches: list[str] = []
    compared = 0
    for path in sorted(EXAMPLES.glob("*.json")):
        resource = json.loads(path.read_text())
        for code, param in registry.params_for(resource["resourceType"]).items():
            for part in param.parts:
                assert part.steps is not None, f"{param.base}.{code} is not compiled"
                compared += 1
                walked = _plain(walk(resource, part.steps))
                evaluated = _plain(fhirpath.evaluate(resource, part.expression, resource=resource))
                if walked != evaluated:
                    mismatches.append(f"{path.name} {code} {part.expression}: {walked} != {evaluated}")
        if fast.values(resource) != reference.values(resource):
            mismatches.append(f"{path.name}: typed values differ")
    assert compared > 15000
    assert mismatches == []


@needs_shared
def test_values_of_one_parameter_is_what_values_gives_for_it():
    """``Extractor.values_of`` (the subscription matcher's lazy, one-parameter extraction) gives
    exactly what the full extraction gives for that parameter, for every parameter of every example."""
    extractor = Extractor(default_registry())
    checked = 0
    for path in sorted(EXAMPLES.glob("*.json"))[:400]:
        resource = json.loads(path.read_text())
        if not isinstance(resource, dict) or resource.get("resourceType") in (None, "Bundle"):
            continue
        everything = extractor.values(resource)
        for code in default_registry().params_for(resource["resourceType"]):
            assert extractor.values_of(resource, code) == everything.get(code, []), (path.name, code)
            checked += 1
    assert checked > 1000
