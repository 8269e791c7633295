"""The ResourceStore contract: the same tests, unchanged, against SQLite and DynamoDB Local.

Each test works in its own tenant; the DynamoDB tables are shared by a worker's tests, so this
also shows that tenants do not see each other's data.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import orjson
import pytest

from fhirflow.adapters.memory import InMemoryBlobStore
from fhirflow.ports import Change, HistoryQuery, ResourceStore, ResourceVersion, VersionConflict

T0 = 1_700_000_000_000
BLOB_THRESHOLD = 2048


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[ResourceStore, InMemoryBlobStore]]:
    blobs = InMemoryBlobStore()
    if request.param == "sqlite":
        from fhirflow.adapters.sqlite.database import SqliteDatabase
        from fhirflow.adapters.sqlite.store import SqliteResourceStore

        db = SqliteDatabase(tmp_path / "store.sqlite3")
        yield SqliteResourceStore(db, blobs=blobs, blob_threshold=BLOB_THRESHOLD), blobs
        db.close()
    else:
        from fhirflow.adapters.aws.dynamodb_store import DynamoDbResourceStore

        tables = request.getfixturevalue("shared_tables")
        # Three history shards: the type and system listings must merge partitions correctly.
        yield (
            DynamoDbResourceStore(
                tables.resources, client=tables.client, blobs=blobs, blob_threshold=BLOB_THRESHOLD, history_shards=3
            ),
            blobs,
        )


@pytest.fixture
def store(backend: tuple[ResourceStore, InMemoryBlobStore]) -> ResourceStore:
    return backend[0]


def body(type_: str, id_: str, version: int, **extra: object) -> bytes:
    return orjson.dumps({"resourceType": type_, "id": id_, "meta": {"versionId": str(version)}, **extra})


def version(
    tenant: str,
    type_: str,
    id_: str,
    number: int,
    at: int,
    *,
    deleted: bool = False,
    method: str = "PUT",
    **extra: object,
) -> ResourceVersion:
    content = None if deleted else body(type_, id_, number, **extra)
    return ResourceVersion(tenant, type_, id_, number, T0 + at, deleted, "DELETE" if deleted else method, content)  # type: ignore[arg-type]


def write(store: ResourceStore, new: ResourceVersion, expected: int | None, request_id: str = "req") -> ResourceVersion:
    store.commit([Change(new, expected, request_id)])
    return new


def ids(versions: list[ResourceVersion]) -> list[tuple[str, int]]:
    return [(v.id, v.version) for v in versions]


def all_pages(store: ResourceStore, query: HistoryQuery) -> tuple[list[ResourceVersion], int]:
    seen: list[ResourceVersion] = []
    pages = 0
    while True:
        page = store.history(query)
        pages += 1
        seen.extend(page.versions)
        if page.next is None:
            return seen, pages
        assert len(page.versions) == query.count
        query = replace(query, after=page.next)


# -- create, read, vread ----------------------------------------------------------------------


def test_create_then_read_and_vread(store: ResourceStore, tenant: str) -> None:
    created = write(store, version(tenant, "Patient", "p1", 1, 0, method="POST", name="x"), None)
    assert store.current(tenant, "Patient", "p1") == created
    assert store.version(tenant, "Patient", "p1", 1) == created
    assert store.current(tenant, "Patient", "p1").operation == "create"


def test_unknown_resource_and_version(store: ResourceStore, tenant: str) -> None:
    assert store.current(tenant, "Patient", "nobody") is None
    assert store.version(tenant, "Patient", "nobody", 1) is None
    write(store, version(tenant, "Patient", "p1", 1, 0), None)
    assert store.version(tenant, "Patient", "p1", 2) is None
    assert store.version(tenant, "Patient", "p1", 0) is None


def test_update_moves_head_and_keeps_old_versions(store: ResourceStore, tenant: str) -> None:
    first = write(store, version(tenant, "Observation", "o1", 1, 0, status="preliminary"), None)
    second = write(store, version(tenant, "Observation", "o1", 2, 10, status="final"), 1)
    assert store.current(tenant, "Observation", "o1") == second
    assert store.version(tenant, "Observation", "o1", 1) == first
    assert store.version(tenant, "Observation", "o1", 2) == second
    assert second.operation == "update"


# -- optimistic concurrency (If-Match) --------------------------------------------------------


def test_create_of_existing_resource_conflicts(store: ResourceStore, tenant: str) -> None:
    write(store, version(tenant, "Patient", "p1", 1, 0), None)
    with pytest.raises(VersionConflict) as conflict:
        write(store, version(tenant, "Patient", "p1", 1, 5, name="other"), None)
    assert (conflict.value.index, conflict.value.current_version) == (0, 1)
    assert store.current(tenant, "Patient", "p1").body == body("Patient", "p1", 1)


def test_stale_expected_version_conflicts_and_writes_nothing(store: ResourceStore, tenant: str) -> None:
    write(store, version(tenant, "Patient", "p1", 1, 0), None)
    write(store, version(tenant, "Patient", "p1", 2, 10), 1)
    with pytest.raises(VersionConflict) as conflict:
        write(store, version(tenant, "Patient", "p1", 2, 20, name="lost"), 1)
    assert (conflict.value.index, conflict.value.current_version) == (0, 2)
    assert store.current(tenant, "Patient", "p1").last_updated == T0 + 10
    assert len(store.history(HistoryQuery(tenant, "Patient", "p1")).versions) == 2


def test_update_of_missing_resource_conflicts(store: ResourceStore, tenant: str) -> None:
    with pytest.raises(VersionConflict) as conflict:
        write(store, version(tenant, "Patient", "ghost", 2, 0), 1)
    assert (conflict.value.index, conflict.value.current_version) == (0, None)
    assert store.current(tenant, "Patient", "ghost") is None


def test_commit_is_all_or_nothing(store: ResourceStore, tenant: str) -> None:
    write(store, version(tenant, "Patient", "taken", 1, 0), None)
    changes = [
        Change(version(tenant, "Patient", "fresh", 1, 10), None),
        Change(version(tenant, "Observation", "o1", 1, 10), None),
        Change(version(tenant, "Patient", "taken", 1, 10), None),
    ]
    with pytest.raises(VersionConflict) as conflict:
        store.commit(changes)
    assert (conflict.value.index, conflict.value.current_version) == (2, 1)
    assert store.current(tenant, "Patient", "fresh") is None
    assert store.current(tenant, "Observation", "o1") is None
    assert ids(store.history(HistoryQuery(tenant)).versions) == [("taken", 1)]


def test_one_commit_may_chain_versions_of_one_resource(store: ResourceStore, tenant: str) -> None:
    store.commit(
        [
            Change(version(tenant, "Patient", "p1", 1, 0, method="POST"), None),
            Change(version(tenant, "Patient", "p1", 2, 1, name="b"), 1),
        ]
    )
    assert store.current(tenant, "Patient", "p1").version == 2
    assert store.version(tenant, "Patient", "p1", 1) is not None
    with pytest.raises(VersionConflict) as conflict:
        store.commit(
            [
                Change(version(tenant, "Patient", "p1", 3, 5), 2),
                Change(version(tenant, "Patient", "p1", 4, 6), 2),  # does not follow the change before it
            ]
        )
    assert conflict.value.index == 1
    assert store.current(tenant, "Patient", "p1").version == 2


def test_concurrent_writers_exactly_one_wins(store: ResourceStore, tenant: str) -> None:
    write(store, version(tenant, "Patient", "hot", 1, 0), None)
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def contender(n: int) -> None:
        barrier.wait()
        try:
            write(store, version(tenant, "Patient", "hot", 2, 10 + n, writer=n), 1)
            result = "won"
        except VersionConflict as conflict:
            result = f"lost to {conflict.current_version}"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["lost to 2"] * 7 + ["won"]
    assert len(store.history(HistoryQuery(tenant, "Patient", "hot")).versions) == 2


# -- deletion ---------------------------------------------------------------------------------


def test_delete_leaves_a_marker_and_history(store: ResourceStore, tenant: str) -> None:
    live = write(store, version(tenant, "Patient", "p1", 1, 0), None)
    write(store, version(tenant, "Patient", "p1", 2, 10, deleted=True), 1)
    head = store.current(tenant, "Patient", "p1")
    assert head is not None
    assert (head.version, head.deleted, head.body, head.operation) == (2, True, None, "delete")
    assert store.version(tenant, "Patient", "p1", 1) == live
    marker = store.version(tenant, "Patient", "p1", 2)
    assert marker is not None
    assert marker.deleted
    assert marker.body is None
    assert marker.method == "DELETE"


def test_recreate_after_delete_continues_the_versions(store: ResourceStore, tenant: str) -> None:
    write(store, version(tenant, "Patient", "p1", 1, 0), None)
    write(store, version(tenant, "Patient", "p1", 2, 10, deleted=True), 1)
    with pytest.raises(VersionConflict):
        write(store, version(tenant, "Patient", "p1", 1, 20), None)  # it existed: not a fresh create
    again = write(store, version(tenant, "Patient", "p1", 3, 20, name="back"), 2)
    assert store.current(tenant, "Patient", "p1") == again
    assert ids(store.history(HistoryQuery(tenant, "Patient", "p1")).versions) == [("p1", 3), ("p1", 2), ("p1", 1)]


# -- history ----------------------------------------------------------------------------------


def _populate(store: ResourceStore, tenant: str) -> None:
    """Patient a (3 versions, the last a deletion), Patient b, Observation o (2 versions)."""
    write(store, version(tenant, "Patient", "a", 1, 0, method="POST"), None)
    write(store, version(tenant, "Observation", "o", 1, 100, method="POST"), None)
    write(store, version(tenant, "Patient", "a", 2, 200), 1)
    write(store, version(tenant, "Patient", "b", 1, 300), None)
    write(store, version(tenant, "Observation", "o", 2, 400), 1)
    write(store, version(tenant, "Patient", "a", 3, 500, deleted=True), 2)


def test_instance_history_newest_first_with_deletions(store: ResourceStore, tenant: str) -> None:
    _populate(store, tenant)
    page = store.history(HistoryQuery(tenant, "Patient", "a"))
    assert ids(page.versions) == [("a", 3), ("a", 2), ("a", 1)]
    assert page.next is None
    assert page.versions[0].deleted
    assert page.versions[0].body is None
    assert page.versions[1].body == body("Patient", "a", 2)


def test_type_history_lists_only_that_type(store: ResourceStore, tenant: str) -> None:
    _populate(store, tenant)
    page = store.history(HistoryQuery(tenant, "Patient"))
    assert ids(page.versions) == [("a", 3), ("b", 1), ("a", 2), ("a", 1)]
    assert [v.body for v in page.versions[1:]] == [
        body("Patient", "b", 1),
        body("Patient", "a", 2),
        body("Patient", "a", 1),
    ]


def test_system_history_lists_everything_in_the_tenant(store: ResourceStore, tenant: str) -> None:
    _populate(store, tenant)
    page = store.history(HistoryQuery(tenant))
    assert ids(page.versions) == [("a", 3), ("o", 2), ("b", 1), ("a", 2), ("o", 1), ("a", 1)]
    assert [v.type for v in page.versions] == ["Patient", "Observation", "Patient", "Patient", "Observation", "Patient"]


@pytest.mark.parametrize(
    ("type_", "id_", "expected"),
    [
        ("Patient", "a", [("a", 3), ("a", 2), ("a", 1)]),
        ("Patient", None, [("a", 3), ("b", 1), ("a", 2), ("a", 1)]),
        (None, None, [("a", 3), ("o", 2), ("b", 1), ("a", 2), ("o", 1), ("a", 1)]),
    ],
)
def test_history_pages_cover_everything_once(
    store: ResourceStore, tenant: str, type_: str | None, id_: str | None, expected: list[tuple[str, int]]
) -> None:
    _populate(store, tenant)
    seen, pages = all_pages(store, HistoryQuery(tenant, type_, id_, count=2))
    assert ids(seen) == expected
    assert pages == (len(expected) + 1) // 2


def test_paging_is_stable_while_writes_happen(store: ResourceStore, tenant: str) -> None:
    _populate(store, tenant)
    first = store.history(HistoryQuery(tenant, count=3))
    write(store, version(tenant, "Patient", "b", 2, 600), 1)  # newer than everything: not on later pages
    rest, _ = all_pages(store, HistoryQuery(tenant, count=3, after=first.next))
    assert ids(first.versions) + ids(rest) == [("a", 3), ("o", 2), ("b", 1), ("a", 2), ("o", 1), ("a", 1)]


def test_history_since(store: ResourceStore, tenant: str) -> None:
    _populate(store, tenant)
    assert ids(store.history(HistoryQuery(tenant, since=T0 + 300)).versions) == [("a", 3), ("o", 2), ("b", 1)]
    assert ids(store.history(HistoryQuery(tenant, "Patient", since=T0 + 200)).versions) == [
        ("a", 3),
        ("b", 1),
        ("a", 2),
    ]
    assert ids(store.history(HistoryQuery(tenant, "Patient", "a", since=T0 + 201)).versions) == [("a", 3)]
    assert store.history(HistoryQuery(tenant, since=T0 + 501)).versions == []


def test_history_at_lists_versions_current_in_the_interval(store: ResourceStore, tenant: str) -> None:
    _populate(store, tenant)
    # [250, 350): a@2 (current 200..500), o@1 (100..400), b@1 (from 300); not a@1 (superseded at 200).
    at = (T0 + 250, T0 + 350)
    assert ids(store.history(HistoryQuery(tenant, at=at)).versions) == [("b", 1), ("a", 2), ("o", 1)]
    assert ids(store.history(HistoryQuery(tenant, "Patient", at=at)).versions) == [("b", 1), ("a", 2)]
    assert ids(store.history(HistoryQuery(tenant, "Patient", "a", at=at)).versions) == [("a", 2)]
    # A version superseded exactly at the interval's start no longer counts.
    assert ids(store.history(HistoryQuery(tenant, "Patient", "a", at=(T0 + 200, T0 + 201))).versions) == [("a", 2)]


def test_history_at_pages(store: ResourceStore, tenant: str) -> None:
    _populate(store, tenant)
    seen, _ = all_pages(store, HistoryQuery(tenant, at=(T0 + 250, T0 + 10_000), count=1))
    # Everything current at some point from 250 on: a@3, o@2, b@1, a@2, o@1 (a@1 ended at 200).
    assert ids(seen) == [("a", 3), ("o", 2), ("b", 1), ("a", 2), ("o", 1)]


def test_history_count_zero_is_empty(store: ResourceStore, tenant: str) -> None:
    _populate(store, tenant)
    page = store.history(HistoryQuery(tenant, count=0))
    assert page.versions == []
    assert page.next is None


# -- tenants ----------------------------------------------------------------------------------


def test_tenants_are_isolated(store: ResourceStore, tenant: str) -> None:
    other = tenant + "-other"
    write(store, version(tenant, "Patient", "same", 1, 0, owner="one"), None)
    write(store, version(other, "Patient", "same", 1, 10, owner="two"), None)
    write(store, version(other, "Patient", "same", 2, 20, owner="two"), 1)
    assert store.current(tenant, "Patient", "same").version == 1
    assert store.current(other, "Patient", "same").version == 2
    assert store.version(tenant, "Patient", "same", 2) is None
    for level in (HistoryQuery(tenant), HistoryQuery(tenant, "Patient"), HistoryQuery(tenant, "Patient", "same")):
        assert [(v.tenant, v.version) for v in store.history(level).versions] == [(tenant, 1)]
    assert store.current(tenant + "#Patient", "same", "x") is None


def test_tenant_names_cannot_forge_keys(store: ResourceStore, tenant: str) -> None:
    # "a#Patient" + "#x" must not reach the resource "a" / "Patient#x"-like keys of another tenant.
    write(store, version(f"{tenant}#Patient", "Patient", "x", 1, 0), None)
    assert store.current(tenant, "Patient", "x") is None
    assert store.history(HistoryQuery(tenant)).versions == []


# -- large bodies -----------------------------------------------------------------------------


def test_large_bodies_round_trip_through_the_blob_store(
    backend: tuple[ResourceStore, InMemoryBlobStore], tenant: str
) -> None:
    store, blobs = backend
    big = version(tenant, "Binary", "big", 1, 0, data="x" * (BLOB_THRESHOLD * 4))
    write(store, big, None)
    assert len(blobs.blobs) == 1
    assert store.current(tenant, "Binary", "big") == big
    assert store.version(tenant, "Binary", "big", 1) == big
    assert store.history(HistoryQuery(tenant, "Binary")).versions == [big]
    small = write(store, version(tenant, "Binary", "big", 2, 10, data="small"), 1)
    assert store.current(tenant, "Binary", "big") == small
    assert len(blobs.blobs) == 1


def test_a_failed_commit_leaves_no_blob_behind(backend: tuple[ResourceStore, InMemoryBlobStore], tenant: str) -> None:
    store, blobs = backend
    write(store, version(tenant, "Binary", "b", 1, 0), None)
    with pytest.raises(VersionConflict):
        write(store, version(tenant, "Binary", "b", 1, 10, data="y" * (BLOB_THRESHOLD * 2)), None)
    assert blobs.blobs == {}


# -- uniqueness claims (conditional create, http.html#ccreate) ------------------------------------------


def test_a_claim_is_taken_with_its_change_and_only_once(store: ResourceStore, tenant: str) -> None:
    from fhirflow.ports import Claim, ClaimTaken

    key = "a" * 64
    assert store.claim_owner(tenant, "Patient", key) is None
    first = version(tenant, "Patient", "c1", 1, 0, method="POST")
    store.commit([Change(first, None, "req", Claim(key))])
    assert store.claim_owner(tenant, "Patient", key) == "c1"
    assert store.claim_owner(tenant, "Observation", key) is None  # keys are per type...
    assert store.claim_owner(f"{tenant}-other", "Patient", key) is None  # ... and per tenant

    second = version(tenant, "Patient", "c2", 1, 10, method="POST")
    with pytest.raises(ClaimTaken) as caught:
        store.commit([Change(second, None, "req", Claim(key))])
    assert caught.value.owner == "c1"
    assert store.current(tenant, "Patient", "c2") is None  # the change went with its claim
    assert store.history(HistoryQuery(tenant, "Patient")).versions == [first]


def test_a_claim_replaces_a_stale_owner_only_by_compare_and_set(store: ResourceStore, tenant: str) -> None:
    from fhirflow.ports import Claim, ClaimTaken

    key = "b" * 64
    store.commit([Change(version(tenant, "Patient", "old", 1, 0, method="POST"), None, "req", Claim(key))])
    wrong = version(tenant, "Patient", "n1", 1, 10, method="POST")
    with pytest.raises(ClaimTaken):
        store.commit([Change(wrong, None, "req", Claim(key, replaces="someone-else"))])
    assert store.current(tenant, "Patient", "n1") is None
    replacing = version(tenant, "Patient", "n2", 1, 20, method="POST")
    store.commit([Change(replacing, None, "req", Claim(key, replaces="old"))])
    assert store.claim_owner(tenant, "Patient", key) == "n2"
    late = version(tenant, "Patient", "n3", 1, 30, method="POST")
    with pytest.raises(ClaimTaken) as caught:  # a second writer that also found "old" stale loses
        store.commit([Change(late, None, "req", Claim(key, replaces="old"))])
    assert caught.value.owner == "n2"


def test_concurrent_claims_of_one_key_have_one_winner(store: ResourceStore, tenant: str) -> None:
    from fhirflow.ports import Claim, ClaimTaken

    key = "c" * 64
    start = threading.Barrier(8)
    won: list[str] = []
    lost: list[str] = []

    def claim(n: int) -> None:
        start.wait()
        try:
            store.commit([Change(version(tenant, "Patient", f"r{n}", 1, n, method="POST"), None, "req", Claim(key))])
        except ClaimTaken:
            lost.append(f"r{n}")
            return
        won.append(f"r{n}")

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(won) == 1
    assert len(lost) == 7
    assert store.claim_owner(tenant, "Patient", key) == won[0]
    assert [v.id for v in store.history(HistoryQuery(tenant, "Patient")).versions] == won


def test_one_commit_deletes_a_conditional_deletes_batch_of_25(store: ResourceStore, tenant: str) -> None:
    # conditional_delete_max > 1 deletes the matches in commits of 25: one TransactWriteItems on DynamoDB
    for n in range(26):
        write(store, version(tenant, "Patient", f"m{n}", 1, 10), None)
    deletions = [Change(version(tenant, "Patient", f"m{n}", 2, 20, deleted=True), 1, "req") for n in range(25)]
    stale = Change(version(tenant, "Patient", "m25", 3, 20, deleted=True), 2, "req")  # m25 is at version 1
    with pytest.raises(VersionConflict):
        store.commit([*deletions, stale])
    assert all(store.current(tenant, "Patient", f"m{n}").version == 1 for n in range(26))  # type: ignore[union-attr]
    store.commit(deletions)
    assert all(store.current(tenant, "Patient", f"m{n}").deleted for n in range(25))  # type: ignore[union-attr]
    assert not store.current(tenant, "Patient", "m25").deleted  # type: ignore[union-attr]
