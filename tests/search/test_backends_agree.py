"""Differential property test: a search that both backends answer finds the same resources on
SQLite and on OpenSearch (over the fake, ``test_conformance_opensearch.py``). The queries are
drawn from the value-bearing parameters of the fixture's data (numbers, dates, quantities,
strings, tokens, uris, full text) with every prefix and the common modifiers, so a rule written
differently for the two backends shows up as a counterexample, not only where a table row
happens to look. ``AGREE_EXAMPLES`` sets how many searches are drawn (default 200)."""

from __future__ import annotations

import os
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhirflow.http import Application
from fhirflow.query.ast import PREFIXES
from tests.search.client import get
from tests.search.test_conformance import walk

PREFIX = st.sampled_from(["", *sorted(PREFIXES)])
NUMBERS = st.sampled_from(
    [
        "0",
        "0.02",
        "0.020",
        "0.0002",
        "0.00017",
        "0.00166",
        "0.000368",
        "0.0004",
        "0.001",
        "5",
        "5.4",
        "5.0",
        "4.9",
        "6",
        "80",
        "100",
        "120",
        "1e2",
        "185",
        "-1",
        "0.5",
        "2e-2",
    ]
)
DATES = st.sampled_from(
    [
        "1944",
        "1944-11-17",
        "1973",
        "1974-12",
        "1974-12-25",
        "1990",
        "1990-05",
        "1990-05-15",
        "2012",
        "2014-11-09",
        "2017-05-15",
        "2019-07-01",
        "2020",
        "2020-01-02",
        "2020-01-02T10:00:00Z",
        "2021-05",
        "2022-03",
        "2022-03-04",
        "2024",
        "2024-06-09",
        "2024-06-10",
        "2024-06-10T06:00:00+02:00",
        "2030",
    ]
)
WORDS = st.sampled_from(
    [
        "peter",
        "Pet",
        "PETER",
        "chalmers",
        "smith",
        "zoë",
        "zoe",
        "jr",
        "Smith, Jr",
        "van",
        "ann",
        "a",
        "é",
        "springfield",
        "glucose",
        "fasting",
        "blood",
        "pressure",
        "Blood pres",
        "pneumonia",
        "xyz",
        "hba1c",
    ]
)
CODES = st.sampled_from(
    [
        "male",
        "female",
        "unknown",
        "final",
        "preliminary",
        "29463-7",
        "http://loinc.org|29463-7",
        "http://loinc.org|",
        "|ff-glucose",
        "http://ff.example/codes|ff-glucose",
        "ff-glucose",
        "x",
    ]
)
URIS = st.sampled_from(
    [
        "http://hl7.org/fhir/Questionnaire/3141",
        "http://hl7.org/fhir/Questionnaire",
        "http://hl7.org/fhir/",
        "http://hl7.org/fhir/Questionnaire/3141/_history/2",
        "http://hl7.org/fhir/Questionnaire/31",
        "urn:x",
    ]
)
UNITS = st.sampled_from(["", "|http://unitsofmeasure.org|mmol/L", "||mmol/l", "||mmol/L", "||kg", "|http://x|mg"])


def number_value() -> st.SearchStrategy[str]:
    return st.builds(lambda p, n: p + n, PREFIX, NUMBERS)


def date_value() -> st.SearchStrategy[str]:
    return st.builds(lambda p, d: p + d, PREFIX, DATES)


# (searched type, parameter with modifier, values) — each drawn query ANDs one to three of these
PARTS: dict[str, list[tuple[str, st.SearchStrategy[str]]]] = {
    "RiskAssessment": [("probability", number_value())],
    "Observation": [
        ("value-quantity", st.builds(lambda v, u: v + u, number_value(), UNITS)),
        ("date", date_value()),
        ("code", CODES),
        ("code:text", WORDS),
        ("status", CODES),
        ("subject", st.sampled_from(["Patient/ff-comma", "ff-comma", "Patient/example", "example"])),
        ("_content", WORDS),
        ("value-quantity:missing", st.sampled_from(["true", "false"])),
        ("subject:Patient.name", WORDS),
        ("subject:Patient.birthdate", date_value()),
        ("encounter.date", date_value()),
        ("_list", st.sampled_from(["ff-list", "example", "none"])),
        ("combo-code-value-quantity", st.builds(lambda c, v: f"{c}${v}", CODES, number_value())),
    ],
    "Patient": [
        ("birthdate", date_value()),
        ("name", WORDS),
        ("name:exact", WORDS),
        ("name:contains", WORDS),
        ("family", WORDS),
        ("gender", CODES),
        ("gender:not", CODES),
        ("address-city", WORDS),
        ("_text", WORDS),
        ("_content", WORDS),
        ("_content:exact", WORDS),
        ("_lastUpdated", date_value()),
        ("birthdate:missing", st.sampled_from(["true", "false"])),
        ("_has:Observation:patient:code", CODES),
        ("_has:Encounter:subject:date", date_value()),
        ("organization.name", WORDS),
        ("general-practitioner:missing", st.sampled_from(["true", "false"])),
        ("_list", st.sampled_from(["long", "example", "ff-list", "none"])),
    ],
    "Encounter": [("date", date_value()), ("subject", st.sampled_from(["Patient/ff-comma", "Patient/example"]))],
    "Questionnaire": [("url", URIS), ("url:above", URIS), ("url:below", URIS)],
}


@st.composite
def searches(draw: st.DrawFn) -> tuple[str, str]:
    resource_type = draw(st.sampled_from(sorted(PARTS)))
    parts = draw(st.lists(st.sampled_from(PARTS[resource_type]), min_size=1, max_size=3))
    pairs = []
    for name, values in parts:
        alternatives = draw(st.lists(values, min_size=1, max_size=2))
        pairs.append((name, ",".join(a.replace(",", "\\,") for a in alternatives)))
    query = "&".join(f"{name}={quote(value, safe=':|,')}" for name, value in pairs)
    return resource_type, query + "&_count=100"


SORTS = {
    "RiskAssessment": ["probability", "-probability", "date", "_id"],
    "Observation": ["date", "-date", "value-quantity", "-value-quantity", "code", "status", "-_lastUpdated"],
    "Patient": ["birthdate", "-birthdate", "family", "-name", "gender", "_lastUpdated", "-_id", "address-city"],
    "Encounter": ["date", "-date", "status", "subject"],
    "Questionnaire": ["url", "-url", "name"],
}


@st.composite
def sorted_searches(draw: st.DrawFn) -> tuple[str, str]:
    """A search (:func:`searches`) with one to three ``_sort`` keys, paged a few at a time."""
    resource_type, query = draw(searches())
    keys = draw(st.lists(st.sampled_from(SORTS[resource_type]), min_size=1, max_size=3, unique=True))
    page = draw(st.sampled_from([3, 100]))
    return resource_type, query.replace("&_count=100", f"&_sort={','.join(keys)}&_count={page}")


def answer(app: Application, resource_type: str, query: str, *, ordered: bool = False) -> tuple[int, list[str]]:
    reply = get(app, f"/{resource_type}?{query}", headers={"prefer": "handling=strict"})
    if reply.status != 200:
        return reply.status, []
    _, resources, _ = walk(app, reply, {"prefer": "handling=strict"})
    found = [f"{r['resourceType']}/{r['id']}" for r in resources]
    return 200, found if ordered else sorted(found)


@settings(
    max_examples=int(os.environ.get("AGREE_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(search=searches())
def test_both_backends_find_the_same_resources(
    search_app: Application, opensearch_app: Application, search: tuple[str, str]
) -> None:
    resource_type, query = search
    on_sqlite = answer(search_app, resource_type, query)
    on_opensearch = answer(opensearch_app, resource_type, query)
    assert on_sqlite == on_opensearch, f"/{resource_type}?{query}"


@settings(
    max_examples=int(os.environ.get("AGREE_EXAMPLES", "200")) // 4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(search=sorted_searches())
def test_both_backends_sort_and_page_alike(
    search_app: Application, opensearch_app: Application, search: tuple[str, str]
) -> None:
    """``_sort`` (search.html#sort) in the same order, across pages of 3 or 100 (fewer examples:
    the fake scans every document for each page)."""
    resource_type, query = search
    on_sqlite = answer(search_app, resource_type, query, ordered=True)
    on_opensearch = answer(opensearch_app, resource_type, query, ordered=True)
    assert on_sqlite == on_opensearch, f"/{resource_type}?{query}"


FOUND = [
    # searches built from the strategies' own values that find something: the drawn values
    # reach the data, so the property compares answers, not only empty pages
    ("RiskAssessment", "probability=sa0.00166"),
    ("Patient", "name=peter&birthdate=ge1973"),
    ("Patient", "_content=springfield"),
    ("Observation", "value-quantity=ap5&subject=Patient/ff-comma"),
    ("Observation", "code:text=glucose"),
    ("Encounter", "date=ge2020&subject=Patient/ff-comma"),
    ("Questionnaire", "url:below=http://hl7.org/fhir/Questionnaire"),
]


@pytest.mark.parametrize(("resource_type", "query"), FOUND)
def test_the_values_drawn_reach_the_data(
    search_app: Application, opensearch_app: Application, resource_type: str, query: str
) -> None:
    on_sqlite = answer(search_app, resource_type, query)
    assert on_sqlite[0] == 200
    assert on_sqlite[1], "finds nothing: the strategies' values miss the fixture"
    assert answer(opensearch_app, resource_type, query) == on_sqlite
