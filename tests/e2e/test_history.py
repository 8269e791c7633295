"""history at instance, type and system level (http://hl7.org/fhir/R4/http.html#history).

A history Bundle lists versions newest first, includes deletions (``request.method`` DELETE and
no resource), and honours ``_count`` (pages followed through ``next`` links), ``_since`` and ``_at``.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.support import (
    after_earlier_writes,
    assert_outcome,
    create,
    etag_version,
    history,
    is_instant,
    next_link,
    parse_instant,
    patient,
    put,
    unique,
)


def _lifecycle(client: httpx.Client) -> tuple[str, list[dict[str, Any]]]:
    """create, update, update, delete, re-create: five versions; returns the id and what each write answered."""
    created = create(client, patient(gender="male"))
    id_ = created["id"]
    replies = [{"status": 201, "method": "POST", "version": 1, "resource": created}]
    for version, gender in ((2, "female"), (3, "other")):
        reply = put(client, patient(id=id_, gender=gender))
        assert reply.status_code == 200
        replies.append({"status": 200, "method": "PUT", "version": version, "resource": reply.json()})
    deleted = client.delete(f"/Patient/{id_}")
    assert deleted.status_code == 204
    replies.append({"status": 204, "method": "DELETE", "version": 4, "resource": None})
    back = put(client, patient(id=id_, gender="unknown"))
    assert back.status_code == 201
    replies.append({"status": 201, "method": "PUT", "version": 5, "resource": back.json()})
    return id_, replies


def _version_of(entry: dict[str, Any]) -> int:
    etag = entry["response"]["etag"]
    assert etag.startswith('W/"'), etag
    assert etag.endswith('"'), etag
    return int(etag[3:-1])


def test_instance_history_lists_every_version_newest_first(client: httpx.Client, server: LocalServer) -> None:
    id_, writes = _lifecycle(client)

    entries = history(client, f"/Patient/{id_}/_history")

    assert [_version_of(e) for e in entries] == [5, 4, 3, 2, 1]
    for entry, write in zip(entries, reversed(writes), strict=True):
        assert entry["fullUrl"] == f"{server.base_url}/Patient/{id_}"
        request, response = entry["request"], entry["response"]
        assert request["method"] == write["method"]
        assert request["url"] == ("Patient" if write["method"] == "POST" else f"Patient/{id_}")
        assert response["status"].split()[0] in {"200", "201", "204"}
        assert is_instant(response["lastModified"])
        if write["resource"] is None:
            # A deletion: no resource, request.method DELETE.
            assert "resource" not in entry
        else:
            assert entry["resource"] == write["resource"]
            assert response["lastModified"] == write["resource"]["meta"]["lastUpdated"]
    # Newest first by time as well as by version.
    stamps = [parse_instant(e["response"]["lastModified"]) for e in entries]
    assert stamps == sorted(stamps, reverse=True)


def test_history_entry_status_is_what_the_interaction_answered(client: httpx.Client) -> None:
    # Bundle.entry.response.status: "The status code returned by processing this entry". The PUT that
    # brought the deleted resource back answered 201 Created, so its history entry says 201.
    id_, writes = _lifecycle(client)

    entries = history(client, f"/Patient/{id_}/_history")

    assert [e["response"]["status"].split()[0] for e in entries] == [str(w["status"]) for w in reversed(writes)]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7])
def test_instance_history_pages_with_count(client: httpx.Client, count: int) -> None:
    id_, _ = _lifecycle(client)

    entries = history(client, f"/Patient/{id_}/_history", _count=count)

    assert [_version_of(e) for e in entries] == [5, 4, 3, 2, 1]


def test_count_zero_returns_no_entries(client: httpx.Client) -> None:
    id_, _ = _lifecycle(client)

    reply = client.get(f"/Patient/{id_}/_history", params={"_count": 0})

    assert reply.status_code == 200
    assert reply.json().get("entry", []) == []


def test_type_history_with_since_and_paging(client: httpx.Client) -> None:
    create(client, patient(gender="male"))  # older than _since: must not appear
    time.sleep(0.005)
    first = create(client, patient(gender="female"))
    since = first["meta"]["lastUpdated"]
    second = create(client, patient(gender="other"))
    updated = put(client, {**first, "gender": "male"}).json()
    assert client.delete(f"/Patient/{second['id']}").status_code == 204

    entries = history(client, "/Patient/_history", _since=since, _count=2)

    seen = [(e["fullUrl"].rsplit("/", 1)[-1], _version_of(e)) for e in entries]
    assert seen == [(second["id"], 2), (first["id"], 2), (second["id"], 1), (first["id"], 1)]
    assert entries[0]["request"]["method"] == "DELETE"
    assert "resource" not in entries[0]
    assert entries[1]["resource"] == updated
    for entry in entries:
        assert parse_instant(entry["response"]["lastModified"]) >= parse_instant(since)


def test_type_history_holds_only_that_type(client: httpx.Client) -> None:
    after_earlier_writes()
    marker = create(client, patient(gender="male"))
    since = marker["meta"]["lastUpdated"]
    observation = create(
        client, {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}, "valueString": "x"}
    )

    entries = history(client, "/Observation/_history", _since=since)

    assert [e["fullUrl"].rsplit("/", 1)[-1] for e in entries] == [observation["id"]]


def test_system_history_pages_across_types_each_version_once_newest_first(client: httpx.Client) -> None:
    after_earlier_writes()
    first = create(client, patient(gender="male"))
    since = first["meta"]["lastUpdated"]
    expected = [("Patient", first["id"], 1)]
    observation = create(client, {"resourceType": "Observation", "status": "final", "code": {"text": "bp"}})
    expected.append(("Observation", observation["id"], 1))
    for gender in ("female", "other", "unknown"):
        reply = put(client, patient(id=first["id"], gender=gender))
        expected.append(("Patient", first["id"], etag_version(reply)))
    assert client.delete(f"/Observation/{observation['id']}").status_code == 204
    expected.append(("Observation", observation["id"], 2))
    upsert = put(client, patient(id=unique("sys"), gender="male"))
    expected.append(("Patient", upsert.json()["id"], 1))

    entries = history(client, "/_history", _since=since, _count=3)

    seen = [(*e["fullUrl"].rsplit("/", 2)[-2:], _version_of(e)) for e in entries]
    assert seen == list(reversed(expected))
    assert len(set(seen)) == len(seen)
    stamps = [parse_instant(e["response"]["lastModified"]) for e in entries]
    assert stamps == sorted(stamps, reverse=True)


def test_paging_is_stable_while_writes_happen(client: httpx.Client) -> None:
    id_, _ = _lifecycle(client)
    page = client.get(f"/Patient/{id_}/_history", params={"_count": 2}).json()
    put(client, patient(id=id_, gender="male"))  # version 6 lands between pages

    versions = [_version_of(e) for e in page["entry"]]
    url = next_link(page)
    while url:
        page = client.get(url).json()
        versions.extend(_version_of(e) for e in page.get("entry", []))
        url = next_link(page)

    assert versions == [5, 4, 3, 2, 1]


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_at_returns_the_versions_current_at_that_time(client: httpx.Client) -> None:
    v1 = create(client, patient(gender="male"))
    time.sleep(0.02)
    v2 = put(client, {**v1, "gender": "female"}).json()
    time.sleep(0.02)
    v3 = put(client, {**v1, "gender": "other"}).json()
    starts = [parse_instant(v["meta"]["lastUpdated"]) for v in (v1, v2, v3)]
    between_2_and_3 = starts[1] + (starts[2] - starts[1]) / 2
    assert starts[1] < between_2_and_3 < starts[2]

    at_middle = history(client, f"/Patient/{v1['id']}/_history", _at=_instant(between_2_and_3))
    at_v3 = history(client, f"/Patient/{v1['id']}/_history", _at=v3["meta"]["lastUpdated"])
    before_all = history(client, f"/Patient/{v1['id']}/_history", _at=_instant(starts[0] - timedelta(seconds=5)))

    # _at: "only include resource versions that were current at some point during the time period".
    assert [_version_of(e) for e in at_middle] == [2]
    assert [_version_of(e) for e in at_v3] == [3]
    assert before_all == []


def test_at_with_day_precision_covers_the_whole_day(client: httpx.Client) -> None:
    v1 = create(client, patient(gender="male"))
    v2 = put(client, {**v1, "gender": "female"}).json()
    day = v1["meta"]["lastUpdated"][:10]
    expected = [2, 1] if v2["meta"]["lastUpdated"][:10] == day else [1]

    entries = history(client, f"/Patient/{v1['id']}/_history", _at=day)

    assert [_version_of(e) for e in entries] == expected


def test_since_in_the_future_is_empty(client: httpx.Client) -> None:
    id_, _ = _lifecycle(client)

    assert history(client, f"/Patient/{id_}/_history", _since="2999-01-01T00:00:00Z") == []


def _with_cursor(url: str, change: Any) -> str:
    parts = urlsplit(url)
    query = [(k, change(v) if k == "_cursor" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    assert any(k == "_cursor" for k, _ in query), url
    return urlunsplit(parts._replace(query=urlencode(query)))


def _flip(text: str, index: int) -> str:
    char = text[index]
    return text[:index] + ("B" if char != "B" else "C") + text[index + 1 :]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda c: _flip(c, 2), id="payload-char"),
        pytest.param(lambda c: _flip(c, len(c) - 2), id="signature-char"),
        pytest.param(lambda c: c.split(".")[0], id="no-signature"),
        pytest.param(lambda c: "x" + c, id="prefixed"),
        pytest.param(lambda c: "garbage", id="garbage"),
    ],
)
def test_tampered_cursor_is_400(client: httpx.Client, tamper: Any) -> None:
    id_, _ = _lifecycle(client)
    url = next_link(client.get(f"/Patient/{id_}/_history", params={"_count": 2}).json())
    assert url is not None

    reply = client.get(_with_cursor(url, tamper))

    assert_outcome(reply, 400, expression="_cursor")


def test_cursor_of_another_history_is_400(client: httpx.Client) -> None:
    first, _ = _lifecycle(client)
    second, _ = _lifecycle(client)
    url = next_link(client.get(f"/Patient/{first}/_history", params={"_count": 2}).json())
    assert url is not None

    reply = client.get(url.replace(f"/Patient/{first}/", f"/Patient/{second}/"))

    assert_outcome(reply, 400, expression="_cursor")


@pytest.mark.parametrize(
    ("param", "value"),
    [("_count", "many"), ("_count", "-1"), ("_since", "yesterday"), ("_at", "2024-13-01"), ("_since", "2024-02-30")],
)
def test_invalid_history_parameters_are_400(client: httpx.Client, param: str, value: str) -> None:
    assert_outcome(client.get("/Patient/_history", params={param: value}), 400, expression=param)


def test_count_with_non_ascii_digits_is_400(client: httpx.Client) -> None:
    assert_outcome(client.get("/Patient/_history", params={"_count": "\uff15"}), 400, expression="_count")


def test_history_of_an_unknown_instance_is_404(client: httpx.Client) -> None:
    assert_outcome(client.get(f"/Patient/{unique('never')}/_history"), 404, code="not-found")
