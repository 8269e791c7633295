"""Server-assigned ids are UUIDv7: valid FHIR ids, unique, and ordered by the time they were minted."""

from __future__ import annotations

import re
import time
import uuid

from fhirflow.ids import new_resource_id

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def test_an_id_is_a_version_7_uuid_and_a_valid_fhir_id() -> None:
    minted = new_resource_id()
    parsed = uuid.UUID(minted)
    assert str(parsed) == minted
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert FHIR_ID.fullmatch(minted)


def test_the_timestamp_is_the_minting_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    minted = new_resource_id()
    after = time.time_ns() // 1_000_000
    assert before <= uuid.UUID(minted).int >> 80 <= after


def test_ids_of_later_milliseconds_sort_after_earlier_ones() -> None:
    earlier = [new_resource_id() for _ in range(50)]
    time.sleep(0.002)
    later = [new_resource_id() for _ in range(50)]
    assert max(earlier) < min(later)


def test_ids_do_not_repeat() -> None:
    minted = [new_resource_id() for _ in range(100_000)]
    assert len(set(minted)) == len(minted)
    assert len({m[19:] for m in minted}) == len(minted)  # the random tail alone already differs
