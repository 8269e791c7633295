"""The active subscriptions, indexed so that matching a change costs what its own type's
subscriptions that could match it cost, not what all subscriptions cost.

Subscriptions are bucketed by (tenant, resource type); inside a bucket, each subscription whose
criteria have a positive ``_id``, reference or token filter is filed under that filter's keys
(:attr:`CompiledCriteria.keys`: ``subject=Patient/1`` under ``("subject", "r", "1")``), and the
rest go on the bucket's scan list. A change extracts the values of the filed parameters only,
looks up the candidates and evaluates their criteria against values extracted on first use, once
per change (:class:`Facts`): a parameter no candidate reaches is never extracted, and date and
number prefixes are compiled with the criteria, not re-derived per value.
Peers whose matching cost grew with every subscription (Medplum #7882, HAPI's linear scan) are the
reason for the buckets.

Thread-safe: writers take a lock and replace the tuples a match reads (copy on write), so a match
takes no lock and sees each list either before or after a write.
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
    """One (tenant, type)'s subscriptions. Writers (under the index's lock) replace the tuples
    rather than changing them, so a match reads a consistent snapshot without taking the lock."""

    by_key: dict[Key, tuple[_Entry, ...]] = field(default_factory=dict)
    scan: tuple[_Entry, ...] = ()
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    """(parameter code, kind) → how many entries are filed under it."""
    kinds: tuple[tuple[str, str], ...] = ()
    """The (code, kind) pairs a change must offer keys for (a snapshot of ``counts``' keys)."""
    registry_of: CompiledCriteria | None = None
    """The latest filed criteria: its registry extracts a change's keys."""

    def add(self, entry: _Entry) -> None:
        if entry.keys is None:
            self.scan = (*self.scan, entry)
            return
        self.registry_of = next(c for c in entry.criteria if c.keys is not None)
        for k in entry.keys:
            self.by_key[k] = (*self.by_key.get(k, ()), entry)
            kind = (k[0], k[1])
            self.counts[kind] = self.counts.get(kind, 0) + 1
        self.kinds = tuple(self.counts)

    def discard(self, entry: _Entry) -> None:
        if entry.keys is None:
            self.scan = tuple(e for e in self.scan if e.key != entry.key)
            return
        for k in entry.keys:
            filed = tuple(e for e in self.by_key.get(k, ()) if e.key != entry.key)
            if filed:
                self.by_key[k] = filed
            else:
                self.by_key.pop(k, None)
            kind = (k[0], k[1])
            self.counts[kind] -= 1
            if not self.counts[kind]:
                del self.counts[kind]
        self.kinds = tuple(self.counts)

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
        bucket = self._buckets.get((tenant, resource_type))
        if bucket is None:
            return []
        scan, kinds, registry_of, by_key = bucket.scan, bucket.kinds, bucket.registry_of, bucket.by_key
        if resource is None:  # without a body only subscriptions without criteria can match
            every = [*scan, *(e for k in list(by_key) for e in by_key.get(k, ()))]
            return [e.key for e in every if operation in e.interactions and not e.criteria]
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        facts: Facts | None = None
        others: dict[int, Facts] = {}

        def facts_for(compiled: CompiledCriteria) -> Facts:
            nonlocal facts
            if facts is None:
                facts = Facts(resource, compiled.registry, now_ms=now, resolver=resolver)
            if compiled.registry is facts.registry:
                return facts
            found = others.get(id(compiled.registry))  # criteria compiled before a registry change
            if found is None:
                found = others[id(compiled.registry)] = Facts(
                    resource, compiled.registry, now_ms=now, resolver=resolver
                )
            return found

        candidates: list[_Entry] = list(scan)
        if kinds and registry_of is not None:
            lists = [found for k in resource_keys(facts_for(registry_of), kinds) if (found := by_key.get(k))]
            if len(lists) == 1:  # the scan list and the filed ones never share an entry
                candidates.extend(lists[0])
            elif lists:  # an entry filed under two keys the change has is one candidate
                seen: set[Hashable] = set()
                for entries in lists:
                    for entry in entries:
                        if entry.key not in seen:
                            seen.add(entry.key)
                            candidates.append(entry)
        out: list[Hashable] = []
        for entry in candidates:
            if operation not in entry.interactions:
                continue
            for compiled in entry.criteria:
                if not compiled.evaluate(facts_for(compiled)):
                    break
            else:
                out.append(entry.key)
        return out
