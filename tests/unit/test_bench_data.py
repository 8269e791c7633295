"""The search bench's load generator: every copy of a Synthea bundle is the same bundle with
fresh, consistently replaced uuids (so each copy is a new patient, and its references hold)."""

from __future__ import annotations

from bench.search import _UUID, _bundles, _Template


def test_each_copy_replaces_every_uuid_consistently_with_a_new_one() -> None:
    _, patients = _bundles()
    for text in patients[:5]:
        template = _Template(text)
        first, second = template.fresh(), template.fresh()
        before, after = _UUID.findall(text), _UUID.findall(first)
        assert len(before) == len(after)
        mapping: dict[str, str] = {}
        for old, new in zip(before, after, strict=True):
            assert mapping.setdefault(old, new) == new  # the same uuid → the same new one
        assert len(set(mapping.values())) == len(mapping)  # distinct stay distinct
        assert not set(mapping.values()) & set(before)
        assert not set(_UUID.findall(second)) & set(after)  # every copy is new
        assert _UUID.sub("u", first) == _UUID.sub("u", text)  # nothing else changed
        assert template.entries == text.count('"request"')
