"""Inputs whose cost the client controls are bounded before the work (issue 14, defect 5):
nested value sets, huge code systems, regular expressions, and the request time budget."""

from __future__ import annotations

import random
import sqlite3
import threading
from typing import Any

import pytest

from fhirflow import budget
from fhirflow.errors import BadRequest
from fhirflow.query.parser import parse
from fhirflow.query.terminology import MAX_CODES, MAX_VALUE_SETS, _below, _hierarchy, _walk, expand, expand_query
from fhirflow.searchparams.fhirpath import load_fhirpathpy

SYS = "urn:bomb"


class Counting:
    """A terminology that counts how often each value set is read."""

    def __init__(self, *resources: dict[str, Any]) -> None:
        self.resources = {r["url"]: r for r in resources}
        self.reads = 0

    def value_set(self, reference: str) -> dict[str, Any] | None:
        self.reads += 1
        found = self.resources.get(reference)
        return found if found and found["resourceType"] == "ValueSet" else None

    def code_system(self, url: str) -> dict[str, Any] | None:
        found = self.resources.get(url)
        return found if found and found["resourceType"] == "CodeSystem" else None


def diamond(depth: int) -> list[dict[str, Any]]:
    """Value set n includes value set n-1 twice (two includes): without sharing, 2^depth reads."""
    sets = [
        {
            "resourceType": "ValueSet",
            "url": "urn:vs:0",
            "compose": {"include": [{"system": SYS, "concept": [{"code": str(c)} for c in range(50)]}]},
        }
    ]
    for level in range(1, depth + 1):
        below = f"urn:vs:{level - 1}"
        sets.append(
            {
                "resourceType": "ValueSet",
                "url": f"urn:vs:{level}",
                "compose": {"include": [{"valueSet": [below]}, {"valueSet": [below, below]}]},
            }
        )
    return sets


def criterion(name: str, value: str) -> Any:
    return parse("Observation", [(name, value)], strict=True).criteria[0]


def test_nested_value_sets_are_read_once_each() -> None:
    depth = 15
    terminology = Counting(*diamond(depth))
    expanded = expand(criterion("code:in", f"urn:vs:{depth}"), terminology)
    assert len(expanded.values) == 50
    assert terminology.reads == depth + 1  # was 2^depth (each level read its nested set twice)


def test_a_value_set_that_includes_itself_is_a_400_naming_the_parameter() -> None:
    loop = {"resourceType": "ValueSet", "url": "urn:loop", "compose": {"include": [{"valueSet": ["urn:loop"]}]}}
    with pytest.raises(BadRequest) as refused:
        expand(criterion("code:in", "urn:loop"), Counting(loop))
    assert refused.value.issues[0].expression == ("code:in",)
    assert "includes itself" in refused.value.diagnostics


def test_too_many_value_sets_are_refused_before_they_are_read() -> None:
    # A wide fan-out of distinct nested value sets: each a different url.
    leaves = [
        {"resourceType": "ValueSet", "url": f"urn:leaf:{n}", "compose": {"include": [{"system": SYS}]}}
        for n in range(MAX_VALUE_SETS + 10)
    ]
    root = {
        "resourceType": "ValueSet",
        "url": "urn:root",
        "compose": {"include": [{"valueSet": [leaf["url"]]} for leaf in leaves]},
    }
    terminology = Counting(root, *leaves)
    with pytest.raises(BadRequest) as refused:
        expand(criterion("code:in", "urn:root"), terminology)
    assert refused.value.issues[0].code == "too-costly"
    assert terminology.reads == MAX_VALUE_SETS


def flat_code_system(children: int) -> dict[str, Any]:
    return {
        "resourceType": "CodeSystem",
        "url": SYS,
        "concept": [{"code": "root", "concept": [{"code": f"c{n}"} for n in range(children)]}],
    }


def test_below_a_code_with_too_many_descendants_stops_at_the_limit() -> None:
    calls: list[int] = []

    class Watching(Counting):
        def code_system(self, url: str) -> dict[str, Any] | None:
            calls.append(1)
            return super().code_system(url)

    with pytest.raises(BadRequest) as refused:
        expand(criterion("code:below", f"{SYS}|root"), Watching(flat_code_system(60_000)))
    assert refused.value.issues[0].code == "too-costly"
    assert calls == [1]
    leaf = expand(criterion("code:below", f"{SYS}|c59999"), Counting(flat_code_system(60_000)))
    assert [v.code for v in leaf.values] == ["c59999"]
    up = expand(criterion("code:above", f"{SYS}|c123"), Counting(flat_code_system(MAX_CODES * 5)))
    assert [v.code for v in up.values] == ["c123", "root"]


class ReadCounting(list[Any]):
    """A ``concept`` list that counts the concepts read from it."""

    reads = 0

    def __iter__(self) -> Any:
        for item in super().__iter__():
            ReadCounting.reads += 1
            yield item


def test_below_is_refused_after_reading_the_limit_not_the_whole_code_system() -> None:
    children = ReadCounting({"code": f"c{n}"} for n in range(60_000))
    code_system = {"resourceType": "CodeSystem", "url": SYS, "concept": [{"code": "root", "concept": children}]}
    ReadCounting.reads = 0
    with pytest.raises(BadRequest) as refused:
        expand(criterion("code:below", f"{SYS}|root"), Counting(code_system))
    assert refused.value.issues[0].code == "too-costly"
    assert refused.value.issues[0].expression == ("code:below",)
    assert ReadCounting.reads <= MAX_CODES + 1  # was all 60,000: the hierarchy was built, then walked


class ReadsCodeSystems(Counting):
    """A terminology that lists the code systems read from it."""

    def __init__(self, *resources: dict[str, Any]) -> None:
        super().__init__(*resources)
        self.code_systems: list[str] = []

    def code_system(self, url: str) -> dict[str, Any] | None:
        self.code_systems.append(url)
        return super().code_system(url)


def test_many_codes_of_one_code_system_read_and_walk_it_once() -> None:
    children = ReadCounting({"code": f"c{n}"} for n in range(5_000))
    code_system = {"resourceType": "CodeSystem", "url": SYS, "concept": [{"code": "root", "concept": children}]}
    leaves = [f"c{n}" for n in range(0, 5_000, 25)]  # 200 leaf codes: a small answer
    for modifier in ("below", "above"):
        terminology = ReadsCodeSystems(code_system)
        ReadCounting.reads = 0
        query = parse("Observation", [(f"code:{modifier}", ",".join(f"{SYS}|{c}" for c in leaves))], strict=True)
        expanded = expand_query(query, terminology).criteria[0]
        assert sorted(v.code or "" for v in expanded.values) == sorted(
            leaves + (["root"] if modifier == "above" else [])
        )
        assert terminology.code_systems == [SYS]
        assert ReadCounting.reads == 5_000  # once (was 200 times over: each value read and walked it all)
    # Separate parameters share one expansion's reads as well.
    terminology = ReadsCodeSystems(code_system)
    query = parse("Observation", [("code:below", f"{SYS}|{c}") for c in leaves[:50]], strict=True)
    assert len(expand_query(query, terminology).criteria) == 50
    assert terminology.code_systems == [SYS]


def test_the_codes_of_all_terminology_parameters_together_are_bounded() -> None:
    codes = [{"code": f"c{n}"} for n in range(600)]
    half = {"resourceType": "ValueSet", "url": "urn:half", "compose": {"include": [{"system": SYS, "concept": codes}]}}
    one = parse("Observation", [("code:in", "urn:half"), ("code", "x")], strict=True)
    assert len(expand_query(one, Counting(half)).criteria[0].values) == 600
    two = parse("Observation", [("code:in", "urn:half"), ("code:not-in", "urn:half")], strict=True)
    with pytest.raises(BadRequest) as refused:  # 1,200 codes: each within the limit, not together
        expand_query(two, Counting(half))
    assert refused.value.issues[0].code == "too-costly"
    assert refused.value.issues[0].expression == ("code:not-in",)


def test_below_follows_a_code_listed_under_several_parents_in_any_order() -> None:
    # y's children are listed before y turns out to be under x; z's after (a second pass is needed).
    concept = [
        {"code": "y", "concept": [{"code": "y1"}, {"code": "z"}]},
        {"code": "x", "concept": [{"code": "y"}, {"code": "z", "concept": [{"code": "z1"}]}]},
        {"code": "other", "concept": [{"code": "o1"}]},
    ]
    terminology = Counting({"resourceType": "CodeSystem", "url": SYS, "concept": concept})
    below = expand(criterion("code:below", f"{SYS}|x"), terminology)
    assert sorted(v.code or "" for v in below.values) == ["x", "y", "y1", "z", "z1"]
    below = expand(criterion("code:below", f"{SYS}|y"), terminology)
    assert sorted(v.code or "" for v in below.values) == ["y", "y1", "z", "z1"]
    below = expand(criterion("code:below", f"{SYS}|o1"), terminology)
    assert [v.code for v in below.values] == ["o1"]


def test_the_one_pass_below_agrees_with_the_whole_hierarchy_walk() -> None:
    # Random nested code systems in which codes repeat under several parents (and under themselves).
    def concepts(rnd: random.Random, depth: int, codes: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for _ in range(rnd.randint(0, 4)):
            item: dict[str, Any] = {"code": rnd.choice(codes)}
            if depth and rnd.random() < 0.4:
                item["concept"] = concepts(rnd, depth - 1, codes)
            out.append(item)
        return out

    for seed in range(2_000):
        rnd = random.Random(seed)
        codes = [f"k{n}" for n in range(rnd.randint(1, 12))]
        tree = concepts(rnd, 4, codes)
        for code in codes:
            whole = _walk(_hierarchy(tree, above=False), code, lambda count: None)
            assert set(_below(tree, code, limit=lambda count: None)) == set(whole), (seed, code)


def test_fhirpath_regular_expressions_cannot_backtrack_catastrophically() -> None:
    fhirpathpy = load_fhirpathpy()
    patient = {"resourceType": "Patient", "id": "a" * 64}
    patient["name"] = [{"family": "a" * 60 + "!"}]
    # Python's backtracking engine needs ~2^60 steps for this; RE2 is linear.
    assert fhirpathpy.evaluate(patient, "Patient.name.family.matches('^(a+)+$')") == [False]
    assert fhirpathpy.evaluate(patient, "Patient.name.family.matches('^(a+)+!$')") == [True]
    assert fhirpathpy.evaluate({"resourceType": "Patient", "id": "abc"}, "id.replaceMatches('(b)', '[$1]')") == [
        "a[b]c"
    ]


def test_a_backreference_is_an_evaluation_error_not_a_slow_match() -> None:
    fhirpathpy = load_fhirpathpy()
    with pytest.raises(Exception, match="escape"):
        fhirpathpy.evaluate({"resourceType": "Patient", "id": "aa"}, r"id.matches('(a)\\1')")


def test_a_statement_past_the_deadline_is_interrupted() -> None:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    with budget.request_budget(0.2), pytest.raises(budget.TooCostly) as stopped, budget.interrupt_when_late(conn):
        conn.execute(endless).fetchone()
    assert stopped.value.status == 503
    assert stopped.value.issues[0].code == "too-costly"
    assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is usable afterwards


def test_without_a_budget_nothing_is_interrupted_and_budgets_do_not_leak_across_threads() -> None:
    conn = sqlite3.connect(":memory:")
    with budget.interrupt_when_late(conn):
        assert conn.execute("SELECT 1").fetchone() == (1,)
    seen: list[bool] = []
    with budget.request_budget(5):
        assert budget.active()
        worker = threading.Thread(target=lambda: seen.append(budget.active()))
        worker.start()
        worker.join()
    assert seen == [False]
    assert not budget.active()
