"""Parameters stored as others (fhirflow.adapters.sqlite.search.writer.STORED_AS): ``phonetic`` is
``name``'s expression, and each Observation ``combo-*`` the union of its plain and ``component-``
parameters. Their rows are not written; queries read the others'. Checked here: the registry's
official expressions say exactly that, no alias rows are written, and every query gives what it
gave when each parameter had rows of its own (the same fixture indexed both ways).

The same holds for the string parameters that subsume others (writer.SUBSUMES): ``name`` keeps
only the values its ``family`` and ``given`` do not have, ``address`` those its city, state,
postal code and country do not, and queries read them together."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.search import criteria, writer
from fhirflow.adapters.sqlite.search.engine import SqliteSearchEngine
from fhirflow.http import Application
from fhirflow.searchparams.extract import extractor_for
from fhirflow.searchparams.registry import default_registry
from fhirflow.searchparams.values import CompositeValue, TokenValue
from tests.search import client, fixtures
from tests.search.conftest import NOW_MS, app_for

QUERIES = [
    "/Observation?combo-code=http%3A%2F%2Floinc.org%7C8480-6",
    "/Observation?combo-code=http%3A%2F%2Floinc.org%7C29463-7",
    "/Observation?combo-code=8480-6,29463-7,85354-9",
    "/Observation?combo-code:missing=true",
    "/Observation?combo-code:not=http%3A%2F%2Floinc.org%7C85354-9",
    "/Observation?combo-code:text=systolic",
    "/Observation?combo-value-quantity=gt100",
    "/Observation?combo-value-quantity=lt20",
    "/Observation?combo-value-quantity:missing=true",
    "/Observation?combo-value-concept:missing=false",
    "/Observation?combo-data-absent-reason:missing=false",
    "/Observation?combo-code-value-quantity=http%3A%2F%2Floinc.org%7C8480-6$gt100",
    "/Observation?combo-code-value-quantity=http%3A%2F%2Floinc.org%7C29463-7$gt180",
    "/Observation?combo-code-value-quantity=8480-6$lt60,8462-4$lt90",
    "/Observation?combo-code-value-quantity:missing=false",
    "/Observation?combo-code-value-concept:missing=false",
    "/Observation?combo-code=http%3A%2F%2Floinc.org%7C85354-9&_sort=combo-value-quantity",
    "/Observation?combo-value-quantity:missing=false&_sort=-combo-value-quantity,_id",
    "/Observation?_has:Observation:has-member:combo-code=8480-6",
    "/Patient?phonetic=chalmers",
    "/Patient?phonetic:exact=Chalmers",
    "/Patient?phonetic:contains=alm",
    "/Patient?phonetic:missing=true",
    "/Patient?phonetic:missing=false&_sort=phonetic,_id",
    "/Practitioner?phonetic=van",
    "/Practitioner?phonetic:missing=false",
    "/Patient?name=peter",
    "/Patient?name=chal",
    "/Patient?name:exact=Chalmers",
    "/Patient?name:contains=ame",
    "/Patient?name:missing=true",
    "/Patient?name:missing=false&_sort=name,_id",
    "/Patient?name:missing=false&_sort=-name,_id",
    "/Patient?address=erewhon",
    "/Patient?address=pleasant",
    "/Patient?address:exact=3999",
    "/Patient?address:contains=ainbo",
    "/Patient?address:missing=true",
    "/Patient?address:missing=false&_sort=-address,_id",
    "/Patient?name=jim&address=vic",
    "/Practitioner?name=adam",
    "/Practitioner?address=amsterdam",
    "/Organization?address=ann",
    "/Location?address:missing=false&_sort=address,_id",
    "/Observation?subject:Patient.name=peter",
    "/Patient?_has:Observation:patient:code=http%3A%2F%2Floinc.org%7C29463-7&name=peter",
    "/Observation?code-value-quantity=http%3A%2F%2Floinc.org%7C29463-7$gt100",
    "/Observation?code-value-quantity=http%3A%2F%2Floinc.org%7C8302-2$lt150,http%3A%2F%2Floinc.org%7C29463-7$lt50",
    "/Observation?code-value-quantity=8480-6$gt100",
    "/Observation?code-value-quantity:missing=true",
    "/Observation?code-value-quantity:missing=false",
    "/Observation?code-value-quantity=http%3A%2F%2Floinc.org%7C29463-7$gt100&patient:missing=false",
    "/Observation?code-value-concept=http%3A%2F%2Floinc.org%7C883-9$http%3A%2F%2Fsnomed.info%2Fsct%7C112144000",
    "/Observation?code-value-concept=883-9$112144000,55233-1$x",
    "/Observation?code-value-concept:missing=false",
    "/Observation?code-value-date=http%3A%2F%2Floinc.org%7C8665-2$lt2017",
    "/Observation?code-value-date:missing=false",
    "/Observation?code-value-string=363779003$*1",
    "/Observation?code-value-string:missing=false",
    "/Observation?combo-code-value-concept=883-9$112144000",
    "/Patient?_has:Observation:patient:code-value-quantity=http%3A%2F%2Floinc.org%7C29463-7$gt100",
]
NON_EMPTY = {QUERIES[0], QUERIES[1], QUERIES[6], QUERIES[11], QUERIES[12], QUERIES[19], QUERIES[23]} | {
    "/Patient?name=peter",
    "/Patient?name:exact=Chalmers",
    "/Patient?name:missing=false&_sort=name,_id",
    "/Patient?address=pleasant",
    "/Patient?address:missing=false&_sort=-address,_id",
    "/Practitioner?name=adam",
    "/Observation?subject:Patient.name=peter",
    "/Observation?code-value-quantity=http%3A%2F%2Floinc.org%7C29463-7$gt100",
    "/Observation?code-value-quantity:missing=true",
    "/Observation?code-value-quantity:missing=false",
    "/Observation?code-value-concept=http%3A%2F%2Floinc.org%7C883-9$http%3A%2F%2Fsnomed.info%2Fsct%7C112144000",
    "/Observation?code-value-date=http%3A%2F%2Floinc.org%7C8665-2$lt2017",
    "/Observation?code-value-string=363779003$*1",
    "/Observation?combo-code-value-concept=883-9$112144000",
    "/Patient?_has:Observation:patient:code-value-quantity=http%3A%2F%2Floinc.org%7C29463-7$gt100",
}


def _all_ids(app: Application, url: str) -> tuple[int, list[str]]:
    reply = client.get(app, f"{url}&_count=50")
    found: list[str] = []
    while reply.status == 200:
        bundle: dict[str, Any] = reply.json()
        found += client.ids(bundle)
        following = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
        if not following:
            break
        reply = client.get(app, following[0])
    return reply.status, found


@pytest.fixture(scope="module")
def without_aliases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[int, list[str]]]]:
    """Each query's answer when every parameter had rows of its own."""
    if not fixtures.EXAMPLES.exists() or not fixtures.SYNTHEA.exists():
        pytest.skip(f"the HL7 examples and Synthea bundles are not under {fixtures.SHARED}")
    db = SqliteDatabase(Path(tmp_path_factory.mktemp("no-aliases")) / "search.sqlite3")
    with pytest.MonkeyPatch.context() as patch:  # indexing and querying alike; restored before the tests
        patch.setattr(writer, "STORED_AS", {})
        patch.setattr(writer, "SUBSUMES", {})
        patch.setattr(writer, "JOINED", {})
        patch.setattr(criteria, "JOINED", {})
        writer.aliased_codes.cache_clear()  # they read STORED_AS and SUBSUMES
        writer.subsumed_codes.cache_clear()
        try:
            fixtures.load(db)
            engine = SqliteSearchEngine(db, clock=lambda: NOW_MS)
            app = app_for(db, engine, Path(tmp_path_factory.mktemp("no-aliases-settings")))
            answers = {url: _all_ids(app, url) for url in QUERIES}
        finally:
            writer.aliased_codes.cache_clear()
            writer.subsumed_codes.cache_clear()
    yield answers
    db.close()


def test_each_alias_is_what_the_official_expressions_say() -> None:
    registry = default_registry()
    for (rtype, code), targets in writer.STORED_AS.items():
        param = registry.params_for(rtype)[code]
        stored = [registry.params_for(rtype)[t] for t in targets]
        assert all(s.type == param.type for s in stored), (rtype, code)
        assert sorted(p.expression for p in param.parts) == sorted(p.expression for s in stored for p in s.parts)
        for n, component in enumerate(param.components):
            assert {s.components[n].type for s in stored} == {component.type}, (rtype, code, n)


def test_each_subsumption_is_what_the_official_expressions_say() -> None:
    registry = default_registry()
    children = {"name": ("family", "given"), "address": ("city", "country", "postalCode", "state")}
    for (rtype, code), parts in writer.SUBSUMES.items():
        params = registry.params_for(rtype)
        (whole,) = params[code].parts
        assert params[code].type == "string"
        for part in parts:
            (child,) = params[part].parts
            assert params[part].type == "string"
            prefix, _, element = child.expression.rpartition(".")
            assert prefix == whole.expression, (rtype, code, part)
            assert element in children[code], (rtype, code, part)


def test_subsumed_values_are_written_once(search_db: SqliteDatabase) -> None:
    conn = search_db.connection()
    for (rtype, code), parts in writer.SUBSUMES.items():
        marks = ", ".join("?" * len(parts))
        repeated = conn.execute(
            f"SELECT COUNT(*) FROM search_string w JOIN search_string p ON p.rid = w.rid AND p.exact = w.exact "
            f"WHERE w.type = ? AND w.param = ? AND p.param IN ({marks})",
            (rtype, code, *parts),
        ).fetchone()[0]
        assert repeated == 0, (rtype, code)
    kept = conn.execute("SELECT COUNT(*) FROM search_string WHERE type = 'Patient' AND param = 'address'").fetchone()
    assert kept[0] > 0  # the lines and texts of addresses stay under ``address``


def test_each_joined_composite_is_the_product_of_its_two_plain_parameters() -> None:
    """On every Observation of the fixture: the composite's values, extracted with its official
    expressions, are every pair of the plain parameters' values (coded tokens only)."""
    registry = default_registry()
    extractor = extractor_for(registry)
    checked = 0
    for resource in [*fixtures.examples(), *fixtures.synthea(), *fixtures.crafted()]:
        if resource["resourceType"] != "Observation":
            continue
        values = extractor.values(resource)
        for (rtype, code), (left, right) in writer.JOINED.items():
            assert rtype == "Observation"
            # a token component takes coded tokens only (a CodeableConcept's text is no code)
            firsts, seconds = (
                [v for v in values.get(c, []) if not (isinstance(v, TokenValue) and v.code is None)]
                for c in (left, right)
            )
            pairs = {(a, b) for a in firsts for b in seconds}
            composite = {tuple(v.components) for v in values.get(code, []) if isinstance(v, CompositeValue)}
            assert composite == pairs, (resource["id"], code)
            checked += bool(pairs)
    assert checked > 100


def test_no_rows_are_written_for_aliases(search_db: SqliteDatabase) -> None:
    conn = search_db.connection()
    for rtype, code in (*writer.STORED_AS, *writer.JOINED):
        for table in ("search_string", "search_token", "search_quantity"):
            found = conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE type = ? AND (param = ? OR param LIKE ?)",
                (rtype, code, f"{code}$%"),
            ).fetchone()[0]
            assert found == 0, (rtype, code, table)


@pytest.mark.parametrize("url", QUERIES)
def test_answers_are_those_of_parameters_with_rows_of_their_own(
    url: str, search_app: Application, without_aliases: dict[str, tuple[int, list[str]]]
) -> None:
    expected = without_aliases[url]
    assert _all_ids(search_app, url) == expected
    if url in NON_EMPTY:
        assert expected[0] == 200
        assert expected[1], f"{url} found nothing: the comparison would prove little"
