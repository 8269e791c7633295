"""The write side's bulk requests: index writes → ``_bulk`` bodies, and the answer → a result per write.

Every write is an ``index`` action at the resource's version with ``version_type=external``
(documents.py): OpenSearch applies it only when the version is greater than the one it holds and
answers 409 ``version_conflict_engine_exception`` otherwise, which here is False ("an equal or
newer version is there, nothing changed"), never an error. Replays and reordered batches are
therefore no-ops, per item, inside one request; two versions of one resource in the same body
are applied in body order (same document, same shard).

Bodies are NDJSON written with orjson and cut into chunks of at most ``max_bytes`` (the domain
refuses HTTP bodies over its instance type's limit, 10 MiB on the smallest), never splitting an
action from its document. Failures are reported per item, with OpenSearch's status and error
type only: an error's ``reason`` may quote the document's field values (PHI), so it is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import orjson

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
"""Per bulk request: half the smallest instance type's HTTP body limit."""
RESPONSE_FILTER = "errors,items.*.status,items.*.error.type"
"""``filter_path`` of a bulk request: what :func:`item_results` reads, and nothing that quotes documents."""
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
VERSION_CONFLICT = "version_conflict_engine_exception"


class IndexWriteFailed(Exception):
    """OpenSearch refused one write of a bulk request (its item status and error type, no reason)."""

    def __init__(self, status: int, error_type: str | None) -> None:
        super().__init__(f"the search index refused the write: {status} {error_type or ''}".rstrip())
        self.status = status
        self.error_type = error_type

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUSES


def action_lines(doc_id: str, version: int, document: dict[str, Any], *, version_type: str = "external") -> bytes:
    """One write's two NDJSON lines: the ``index`` action at an external version, then the document.
    A reindex rewrites a document at its own version with ``external_gte``."""
    action = {"index": {"_id": doc_id, "version": version, "version_type": version_type}}
    return orjson.dumps(action) + b"\n" + orjson.dumps(document) + b"\n"


def chunks(lines: Sequence[bytes], max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[tuple[int, int, bytes]]:
    """``(start, end, body)``: the lines of writes ``start`` to ``end - 1`` joined into a body of at
    most ``max_bytes`` (a single larger write goes alone)."""
    start, size = 0, 0
    for position, entry in enumerate(lines):
        if position > start and size + len(entry) > max_bytes:
            yield start, position, b"".join(lines[start:position])
            start, size = position, 0
        size += len(entry)
    if start < len(lines):
        yield start, len(lines), b"".join(lines[start:])


def item_results(response: dict[str, Any], expected: int) -> list[bool | Exception]:
    """A bulk response's items as port results: True (indexed), False (an equal or newer version
    was there) or :class:`IndexWriteFailed`."""
    items = response.get("items") or []
    if len(items) != expected:
        raise IndexWriteFailed(500, f"bulk answered {len(items)} items for {expected} writes")
    results: list[bool | Exception] = []
    for item in items:
        [(_, outcome)] = item.items()
        status = int(outcome.get("status", 500))
        error = outcome.get("error")
        error_type = error.get("type") if isinstance(error, dict) else None
        if 200 <= status < 300:
            results.append(True)
        elif status == 409 and error_type == VERSION_CONFLICT:
            results.append(False)
        else:
            results.append(IndexWriteFailed(status, error_type))
    return results
