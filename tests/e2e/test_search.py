"""Search over real HTTP on the embedded server (http.html#search): type, system and compartment
search, POST _search, includes, read-your-writes, Prefer: handling and tenants."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.support import assert_outcome, create, next_link, put, unique

TAG = "urn:fhirflow:e2e"


def tagged(resource: dict[str, Any], marker: str) -> dict[str, Any]:
    return {**resource, "meta": {"tag": [{"system": TAG, "code": marker}]}}


def search(client: httpx.Client, url: str, **params: Any) -> dict[str, Any]:
    reply = client.get(url, params=params)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = reply.json()
    assert body["resourceType"] == "Bundle"
    assert body["type"] == "searchset"
    return body


def matches(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return sorted(
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    )


def family_with_observations(client: httpx.Client, marker: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    person = create(client, tagged({"resourceType": "Patient", "name": [{"family": f"Fam{marker}"}]}, marker))
    observations = [
        create(
            client,
            tagged(
                {
                    "resourceType": "Observation",
                    "status": status,
                    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                    "subject": {"reference": f"Patient/{person['id']}"},
                    "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": "kg"},
                    "effectiveDateTime": date,
                },
                marker,
            ),
        )
        for status, value, date in (
            ("final", 70, "2021-01-05"),
            ("final", 80, "2022-06-01"),
            ("amended", 90, "2023-02-01"),
        )
    ]
    return person, observations


def test_type_search_finds_what_was_just_written(client: httpx.Client) -> None:
    marker = unique()
    person, observations = family_with_observations(client, marker)
    bundle = search(client, "/Observation", _tag=f"{TAG}|{marker}", status="final", _sort="-date")
    assert [e["resource"]["id"] for e in bundle["entry"]] == [observations[1]["id"], observations[0]["id"]]
    assert bundle["total"] == 2
    assert bundle["entry"][0]["fullUrl"].endswith(f"/Observation/{observations[1]['id']}")
    chained = search(client, "/Observation", **{"subject:Patient.family": f"fam{marker}", "value-quantity": "gt75"})
    assert matches(chained) == sorted(f"Observation/{o['id']}" for o in observations[1:])
    has = search(client, "/Patient", **{"_has:Observation:subject:status": "amended", "_tag": f"{TAG}|{marker}"})
    assert matches(has) == [f"Patient/{person['id']}"]


def test_updates_and_deletes_show_in_the_next_search(client: httpx.Client) -> None:
    marker = unique()
    person = create(client, tagged({"resourceType": "Patient", "name": [{"family": "Before"}]}, marker))
    assert matches(search(client, "/Patient", _tag=f"{TAG}|{marker}", family="before")) == [f"Patient/{person['id']}"]
    assert put(client, {**person, "name": [{"family": "After"}]}).status_code == 200
    assert matches(search(client, "/Patient", _tag=f"{TAG}|{marker}", family="before")) == []
    assert matches(search(client, "/Patient", _tag=f"{TAG}|{marker}", family="after")) == [f"Patient/{person['id']}"]
    assert client.delete(f"/Patient/{person['id']}").status_code in (200, 204)
    assert search(client, "/Patient", _tag=f"{TAG}|{marker}")["total"] == 0


def test_system_compartment_and_post_search(client: httpx.Client) -> None:
    marker = unique()
    person, observations = family_with_observations(client, marker)
    system = search(client, "/", _tag=f"{TAG}|{marker}", _type="Patient,Observation")
    assert system["total"] == 4
    compartment = search(client, f"/Patient/{person['id']}/Observation", status="amended")
    assert matches(compartment) == [f"Observation/{observations[2]['id']}"]
    everything = search(client, f"/Patient/{person['id']}/*")
    assert len(matches(everything)) == 4  # the patient and its three observations
    reply = client.post(
        "/Observation/_search",
        content=f"_tag={TAG}%7C{marker}&_include=Observation:subject&_count=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status_code == 200, reply.text
    bundle = reply.json()
    assert len(matches(bundle)) == 1
    assert matches(bundle, "include") == [f"Patient/{person['id']}"]
    seen = matches(bundle)
    following = next_link(bundle)
    while following:
        page = client.get(following).json()
        seen += matches(page)
        following = next_link(page)
    assert sorted(seen) == sorted(f"Observation/{o['id']}" for o in observations)


def test_handling_lenient_and_strict(client: httpx.Client) -> None:
    lenient = search(client, "/Patient", family="nobody-has-this", unknownParam="x")
    outcome = [e["resource"] for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome
    assert outcome[0]["issue"][0]["expression"] == ["unknownParam"]
    self_link = next(link["url"] for link in lenient["link"] if link["relation"] == "self")
    assert "unknownParam" not in self_link
    strict = client.get("/Patient", params={"unknownParam": "x"}, headers={"Prefer": "handling=strict"})
    assert_outcome(strict, 400, expression="unknownParam")


def test_bad_input_is_a_400_naming_the_parameter(client: httpx.Client) -> None:
    for params, name in (
        ({"birthdate": "2020-02-30"}, "birthdate"),
        ({"birthdate": "zz2020"}, "birthdate"),
        ({"gender.name": "x"}, "gender.name"),
        ({"_count": "-1"}, "_count"),
    ):
        assert_outcome(client.get("/Patient", params=params), 400, expression=name)
    assert_outcome(client.get("/Observation", params={"subject.name": "x"}), 400, expression="subject.name")
    assert_outcome(client.get("/Patient", params={"_cursor": "forged.cursor"}), 400, expression="_cursor")


def test_tenants_search_only_their_own_resources(client: httpx.Client) -> None:
    marker = unique()
    reply = client.post("/tenant/acme/Patient", json=tagged({"resourceType": "Patient", "gender": "other"}, marker))
    assert reply.status_code == 201, reply.text
    in_acme = client.get("/tenant/acme/Patient", params={"_tag": f"{TAG}|{marker}"}).json()
    assert in_acme["total"] == 1
    assert in_acme["entry"][0]["fullUrl"].split("/tenant/acme/")[1].startswith("Patient/")
    assert search(client, "/Patient", _tag=f"{TAG}|{marker}")["total"] == 0
