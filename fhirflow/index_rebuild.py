"""Rebuild the OpenSearch index from DynamoDB, the system of record (``fhirflow rebuild-index``).

For a new domain, a lost or emptied index, or an index whose documents must be rebuilt with
the current code: every live resource's current version is read from its head item
(:class:`~fhirflow.adapters.aws.dynamodb_heads.DynamoDbHeadScanner`, a parallel Scan, one thread
per segment) and written to the index in bulk requests (``OpenSearchSearchIndex.apply_batch``:
the documents index-sync builds, with each tenant's runtime SearchParameters). Deleted resources
are not indexed; ``tenant`` limits the rebuild to one tenant.

**Resumable.** After each page is indexed, its segment's position (the Scan's
``LastEvaluatedKey``) is saved in a checkpoint (a JSON file, replaced atomically). A rebuild
that is interrupted (Ctrl-C, a crash, a kill, the index or the table unreachable) goes on from
the checkpoint with the same command: at most one page per segment is indexed again, and since
documents are keyed by tenant, type and id and written with external versioning, a second write
of the same version changes nothing (OpenSearch answers 409, counted as "already indexed") —
no duplicates. The same versioning makes a rebuild safe while index-sync runs: neither can put
an older version over a newer one.

**Why a CLI rather than a Step Functions job.** It adds no resources to the stack (the template
is close to CloudFormation's 500), runs from anywhere with credentials that may Scan the table
and bulk-write the domain (an operator, a CodeBuild job, a container), has no 15-minute limit
per run, shows progress as it goes, and its checkpoint file makes it resumable from where it
stopped. A rebuild is rare and operator-driven; it needs no always-deployed machinery.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from fhirflow.ports import IndexWrite

if TYPE_CHECKING:
    from fhirflow.adapters.aws.dynamodb_heads import DynamoDbHeadScanner
    from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex
    from fhirflow.ports import BlobStore

logger = logging.getLogger("fhirflow.rebuild")

DEFAULT_SEGMENTS = 4
DEFAULT_PAGE = 500
"""Items a Scan page examines (heads and the rows the filter drops); a page is one bulk request."""


class RebuildError(Exception):
    """A checkpoint that belongs to another rebuild, or a page the index refused in part."""


@dataclass(frozen=True, slots=True)
class SegmentState:
    segment: int
    last_key: dict[str, Any] | None = None
    """The Scan's position after the last page indexed; None with ``done`` False: not started."""
    done: bool = False
    pages: int = 0
    indexed: int = 0
    """Documents written."""
    unchanged: int = 0
    """Documents the index already had at that version (or newer): a resumed page, or index-sync first."""
    failed: int = 0
    """Resources whose document could not be built or was refused (see the log, by type and id)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    table: str
    index: str
    tenant: str | None
    segments: tuple[SegmentState, ...]

    @classmethod
    def fresh(cls, table: str, index: str, tenant: str | None, segments: int) -> Checkpoint:
        return cls(table, index, tenant, tuple(SegmentState(n) for n in range(segments)))

    @property
    def done(self) -> bool:
        return all(s.done for s in self.segments)

    def total(self, name: str) -> int:
        return sum(int(getattr(s, name)) for s in self.segments)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "segments": [asdict(s) for s in self.segments]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        data = json.loads(text)
        return cls(data["table"], data["index"], data["tenant"], tuple(SegmentState(**s) for s in data["segments"]))


@dataclass
class FileCheckpoints:
    """The checkpoint in a JSON file, replaced atomically (write, fsync, rename)."""

    path: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def load(self) -> Checkpoint | None:
        return Checkpoint.from_json(self.path.read_text()) if self.path.exists() else None

    def save(self, checkpoint: Checkpoint) -> None:
        with self._lock:
            temporary = self.path.with_name(self.path.name + ".tmp")
            with temporary.open("w") as out:
                out.write(checkpoint.to_json())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)


Progress = Callable[[Checkpoint], None]


class IndexRebuild:
    def __init__(
        self,
        scanner: DynamoDbHeadScanner,
        index: OpenSearchSearchIndex,
        checkpoints: FileCheckpoints,
        *,
        blobs: BlobStore | None = None,
        segments: int = DEFAULT_SEGMENTS,
        page_size: int = DEFAULT_PAGE,
        progress: Progress | None = None,
    ) -> None:
        self.scanner = scanner
        self.index = index
        self.checkpoints = checkpoints
        self.blobs = blobs
        self.segments = segments
        self.page_size = page_size
        self.progress = progress
        self.stop = threading.Event()
        """Set it (Ctrl-C does) to stop after the pages in flight; the checkpoint keeps the rest."""
        self._lock = threading.Lock()
        self._checkpoint: Checkpoint | None = None

    def start_state(self) -> Checkpoint:
        """The stored checkpoint of this rebuild, or a fresh one; a checkpoint of another rebuild
        (table, index, tenant or segment count) is refused rather than mixed in."""
        stored = self.checkpoints.load()
        fresh = Checkpoint.fresh(self.scanner.table, self.index.index, self.scanner.tenant, self.segments)
        if stored is None:
            return fresh
        if (stored.table, stored.index, stored.tenant, len(stored.segments)) != (
            fresh.table,
            fresh.index,
            fresh.tenant,
            len(fresh.segments),
        ):
            raise RebuildError(
                f"{self.checkpoints.path} is the checkpoint of another rebuild ({stored.table} → {stored.index}, "
                f"tenant {stored.tenant}, {len(stored.segments)} segments): use another file or the same options"
            )
        return stored

    def run(self) -> Checkpoint:
        """Rebuild (or go on rebuilding) until every segment is done or ``stop`` is set; the final
        checkpoint. The first failure of a segment stops the others after their page and is raised."""
        checkpoint = self.start_state()
        self._checkpoint = checkpoint
        if not self.index.create_missing:
            self.index.ensure_index()  # a new domain: the index with its mapping before the first bulk
        pending = [s for s in checkpoint.segments if not s.done]
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=max(1, len(pending)), thread_name_prefix="rebuild") as pool:
            futures = [pool.submit(self._segment, state) for state in pending]
            for future in futures:
                error = future.exception()
                if error is not None:
                    self.stop.set()
                    errors.append(error)
        if errors:
            raise errors[0]
        assert self._checkpoint is not None
        return self._checkpoint

    def _segment(self, state: SegmentState) -> None:
        while not state.done and not self.stop.is_set():
            page = self.scanner.page(state.segment, self.segments, state.last_key, self.page_size)
            writes = [self._write(version, blob) for version, blob in page.heads]
            results = self.index.apply_batch(writes) if writes else []
            indexed = unchanged = failed = 0
            for write, result in zip(writes, results, strict=True):
                if isinstance(result, Exception):
                    if _transient(result):
                        raise result  # the page is not saved: a resume writes it again
                    failed += 1
                    logger.error(
                        "rebuild could not index a resource",
                        extra={
                            "tenant": write.tenant,
                            "type": write.type,
                            "id": write.id,
                            "error": type(result).__name__,
                        },
                    )
                elif result:
                    indexed += 1
                else:
                    unchanged += 1
            state = replace(
                state,
                last_key=page.last_key,
                done=page.last_key is None,
                pages=state.pages + 1,
                indexed=state.indexed + indexed,
                unchanged=state.unchanged + unchanged,
                failed=state.failed + failed,
            )
            self._save(state)

    def _write(self, version: Any, blob: str | None) -> IndexWrite:
        body = version.body
        if body is None and blob is not None:
            if self.blobs is None:
                raise RebuildError("a resource's body is in the blob store, but no blob bucket was given")
            body = self.blobs.get(blob)
        resource = orjson.loads(body) if body is not None else None
        return IndexWrite(version.tenant, version.type, version.id, version.version, version.last_updated, resource)

    def _save(self, state: SegmentState) -> None:
        with self._lock:
            assert self._checkpoint is not None
            segments = tuple(state if s.segment == state.segment else s for s in self._checkpoint.segments)
            self._checkpoint = replace(self._checkpoint, segments=segments)
            self.checkpoints.save(self._checkpoint)
            checkpoint = self._checkpoint
        if self.progress is not None:
            self.progress(checkpoint)


def _transient(error: Exception) -> bool:
    """A failure of the request or of the index as a whole (unreachable, busy, a 429 or 5xx), as
    opposed to one resource whose document cannot be built or that the index refuses: the rebuild
    stops there, to be resumed, rather than count a whole page as failed."""
    from opensearchpy.exceptions import TransportError

    from fhirflow.adapters.opensearch.bulk import IndexWriteFailed
    from fhirflow.errors import ServiceUnavailable
    from fhirflow.ports import IndexWriteSkipped

    if isinstance(error, IndexWriteFailed):
        return error.retryable
    return isinstance(error, (ServiceUnavailable, IndexWriteSkipped, TransportError, ConnectionError, TimeoutError))


# -- the command ------------------------------------------------------------------------------------


def rebuild_command(args: Any, *, client: Any = None) -> int:
    """``fhirflow rebuild-index``: settings from the environment (the stack's names) and options;
    a rich progress bar on a terminal; Ctrl-C stops after the pages in flight, resumable."""
    import dataclasses as dc
    import signal

    from fhirflow.adapters.aws.dynamodb_heads import DynamoDbHeadScanner
    from fhirflow.runtime import build_blobs, opensearch_index
    from fhirflow.settings import Settings

    env = Settings.from_env()
    settings = dc.replace(
        env,
        store="dynamodb",
        search_index="opensearch",
        dynamodb_table=args.table or env.dynamodb_table,
        dynamodb_endpoint=args.dynamodb_endpoint or env.dynamodb_endpoint,
        opensearch_url=args.opensearch_url or env.opensearch_url,
        opensearch_index=args.index or env.opensearch_index,
        blob_bucket=args.blob_bucket or env.blob_bucket,
    )
    if not settings.opensearch_url and client is None:
        from fhirflow.usage import UsageError

        raise UsageError("--opensearch-url (or FHIRFLOW_OPENSEARCH_URL) is needed")
    scanner = DynamoDbHeadScanner(
        settings.dynamodb_table, endpoint_url=settings.dynamodb_endpoint, region=settings.aws_region, tenant=args.tenant
    )
    index = opensearch_index(settings, client=client)
    path = Path(args.checkpoint or f"rebuild-{settings.dynamodb_table}-{settings.opensearch_index}.json")
    rebuild = IndexRebuild(
        scanner,
        index,
        FileCheckpoints(path),
        blobs=build_blobs(settings) if settings.blob_bucket else None,
        segments=args.segments,
        page_size=args.page_size,
    )
    previous = signal.signal(signal.SIGINT, lambda *_: rebuild.stop.set())
    try:
        final = _with_progress(rebuild, show=not args.no_progress)
    finally:
        signal.signal(signal.SIGINT, previous)
    summary = (
        f"{final.total('indexed')} indexed, {final.total('unchanged')} already there, {final.total('failed')} failed"
    )
    if not final.done:
        sys.stdout.write(f"stopped: {summary}; run the same command to go on from {path}\n")
        return 130
    sys.stdout.write(f"done: {summary} ({settings.dynamodb_table} → {settings.opensearch_index}); checkpoint {path}\n")
    return 1 if final.total("failed") else 0


def _with_progress(rebuild: IndexRebuild, *, show: bool) -> Checkpoint:
    if not show:
        return rebuild.run()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("segments · {task.fields[counts]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        start = rebuild.start_state()
        task = bar.add_task(
            "rebuilding the index", total=len(start.segments), completed=sum(s.done for s in start.segments), counts=""
        )

        def update(checkpoint: Checkpoint) -> None:
            counts = (
                f"{checkpoint.total('indexed')} indexed, {checkpoint.total('unchanged')} already there, "
                f"{checkpoint.total('failed')} failed, {checkpoint.total('pages')} pages"
            )
            bar.update(task, completed=sum(s.done for s in checkpoint.segments), counts=counts)

        rebuild.progress = update
        return rebuild.run()
