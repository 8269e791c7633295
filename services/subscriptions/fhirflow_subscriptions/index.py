"""The active subscriptions, indexed so that matching a change costs what its own type's
subscriptions that could match it cost, not what all subscriptions cost.

Subscriptions are bucketed by (tenant, resource type); inside a bucket, each subscription whose
criteria have a positive ``_id``, reference or token filter is filed under that filter's keys
(:attr:`CompiledCriteria.keys`: ``subject=Patient/1`` under ``("subject", "r", "1")``), and the
rest go on the bucket's scan list. A change extracts its keys once, looks up the candidates and
evaluates only their criteria, against index values extracted once per change (:class:`Facts`).
Peers whose matching cost grew with every subscription (Medplum #7882, HAPI's linear scan) are the
reason for the buckets.

Thread-safe: writers take a lock; a match takes it only to copy the candidate lists.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhirflow_subscriptions.criteria import CompiledCriteria, Facts, Key, Resolver, resource_keys

INTERACTIONS = frozenset(("create", "update", "delete"))


@dataclass(frozen=True, slots=True)
class _Entry:
    key: Hashable
    interactions: frozenset[str]
    criteria: tuple[CompiledCriteria, ...]
    keys: frozenset[Key] | None


@dataclass(slots=True)
class _Bucket:
    by_key: dict[Key, dict[Hashable, _Entry]] = field(default_factory=dict)
    scan: dict[Hashable, _Entry] = field(default_factory=dict)
    kinds: dict[str, dict[str, int]] = field(default_factory=dict)
    """Parameter code → kind → how many entries are filed under it (the keys a change must offer)."""
    codes: dict[str, int] = field(default_factory=dict)
    """Parameter code → how many entries' criteria read it: what a change extracts, in one pass."""
    registry_of: CompiledCriteria | None = None
    """The latest filed criteria: its registry extracts a change's keys."""

    def add(self, entry: _Entry) -> None:
        for compiled in entry.criteria:
            for code in compiled.codes:
                self.codes[code] = self.codes.get(code, 0) + 1
        if entry.keys is None:
            self.scan[entry.key] = entry
            return
        self.registry_of = next(c for c in entry.criteria if c.keys is not None)
        for k in entry.keys:
            self.by_key.setdefault(k, {})[entry.key] = entry
            counts = self.kinds.setdefault(k[0], {})
            counts[k[1]] = counts.get(k[1], 0) + 1

    def discard(self, entry: _Entry) -> None:
        for compiled in entry.criteria:
            for code in compiled.codes:
                self.codes[code] -= 1
                if not self.codes[code]:
                    del self.codes[code]
        if entry.keys is None:
            self.scan.pop(entry.key, None)
            return
        for k in entry.keys:
            filed = self.by_key.get(k)
            if filed is not None:
                filed.pop(entry.key, None)
                if not filed:
                    del self.by_key[k]
            counts = self.kinds[k[0]]
            counts[k[1]] -= 1
            if not counts[k[1]]:
                del counts[k[1]]
                if not counts:
                    del self.kinds[k[0]]

    def __bool__(self) -> bool:
        return bool(self.by_key or self.scan)


class SubscriptionIndex:
    """Subscriptions by (tenant, resource type) and discriminator key; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._where: dict[Hashable, tuple[tuple[str, str], _Entry]] = {}

    def put(
        self,
        key: Hashable,
        *,
        tenant: str,
        resource_type: str,
        interactions: frozenset[str],
        criteria: Sequence[CompiledCriteria],
    ) -> None:
        """Add or replace the subscription ``key``: it wants ``interactions`` (a subset of create,
        update, delete) of ``resource_type`` resources meeting every one of ``criteria`` (none:
        every resource of the type)."""
        unknown = set(interactions) - INTERACTIONS
        if unknown:
            raise ValueError(f"unknown interactions {sorted(unknown)}")
        for compiled in criteria:
            if compiled.resource_type != resource_type:
                raise ValueError(f"criteria on {compiled.resource_type} for a {resource_type} subscription")
        keys = min(
            (c.keys for c in criteria if c.keys is not None),
            key=len,
            default=None,
        )
        entry = _Entry(key, frozenset(interactions), tuple(criteria), keys)
        where = (tenant, resource_type)
        with self._lock:
            self._remove(key)
            self._buckets.setdefault(where, _Bucket()).add(entry)
            self._where[key] = (where, entry)

    def remove(self, key: Hashable) -> None:
        with self._lock:
            self._remove(key)

    def _remove(self, key: Hashable) -> None:
        found = self._where.pop(key, None)
        if found is None:
            return
        where, entry = found
        bucket = self._buckets[where]
        bucket.discard(entry)
        if not bucket:
            del self._buckets[where]

    def __len__(self) -> int:
        return len(self._where)

    def covers(self, tenant: str, resource_type: str) -> bool:
        """Whether any subscription of ``tenant`` is about ``resource_type`` (one dict lookup): a
        change no subscription is about needs no body read."""
        return (tenant, resource_type) in self._buckets

    def match(
        self,
        *,
        tenant: str,
        resource_type: str,
        operation: str,
        resource: Mapping[str, Any] | None,
        now_ms: int | None = None,
        resolver: Resolver | None = None,
    ) -> list[Hashable]:
        """The keys of the subscriptions ``resource`` (the version the change made) matches. For a
        delete, pass the last version's body if there is one: without a body only subscriptions
        without criteria can match. ``resolver``: the tenant's other resources, for criteria
        compiled with chains or ``_has`` (without one such criteria raise ValueError)."""
        where = (tenant, resource_type)
        bucket = self._buckets.get(where)
        if bucket is None:
            return []
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        facts: dict[int, Facts] = {}
        codes: frozenset[str] = frozenset()

        def facts_for(compiled: CompiledCriteria) -> Facts:
            assert resource is not None
            found = facts.get(id(compiled.registry))
            if found is None:  # one extraction pass for every parameter the bucket reads
                found = facts[id(compiled.registry)] = Facts(
                    resource, compiled.registry, codes=codes, now_ms=now, resolver=resolver
                )
            found.prefetch(compiled.codes)
            return found

        with self._lock:  # a snapshot of what the change must offer
            bucket = self._buckets.get(where)
            if bucket is None:
                return []
            candidates = list(bucket.scan.values())
            kinds = [(code, kind) for code, counts in bucket.kinds.items() for kind in counts]
            registry_of = bucket.registry_of
            codes = frozenset(bucket.codes)
        if resource is not None and kinds and registry_of is not None:
            offered = resource_keys(facts_for(registry_of), kinds)
            seen: set[Hashable] = set()
            with self._lock:
                bucket = self._buckets.get(where)
                filed = [list(bucket.by_key.get(k, {}).values()) for k in offered] if bucket is not None else []
            for entries in filed:
                for entry in entries:
                    if entry.key not in seen:
                        seen.add(entry.key)
                        candidates.append(entry)
        out: list[Hashable] = []
        for entry in candidates:
            if operation not in entry.interactions:
                continue
            if resource is None:
                if not entry.criteria:
                    out.append(entry.key)
                continue
            for compiled in entry.criteria:
                if not compiled.evaluate(facts_for(compiled)):
                    break
            else:
                out.append(entry.key)
        return out
