"""``fhirflow import``: load transaction/batch Bundles and NDJSON into fhirflow.

Each Bundle file is posted as one Bundle (a transaction stays one atomic transaction); NDJSON
files are cut into batch Bundles of ``--batch-size`` resources. Re-running an import must not
duplicate anything, so every resource that names its own id is written with ``PUT Type/id``
(update as create, http.html#upsert): a Bundle's ``POST`` entries whose resource has an id, or
whose ``fullUrl`` is a ``urn:uuid:`` (Synthea's case), become ``PUT`` of that id (references to the
fullUrl resolve to it as before); ``POST`` entries with ``ifNoneExist`` and entries without any id
are sent as they are. Such a create repeated in a later phase for a resource an earlier phase's
transaction wrote becomes a conditional create on its id (:func:`reuse_written`): it neither
overwrites the fuller copy nor contends for it. The target is either a running server (``--url``)
or the embedded store in a data directory, in-process, through the same bundle handler the server
would call (:mod:`fhirflow.local.importing`: the embedded runner is outside the kernel).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhirflow.usage import UsageError

Poster = Callable[[bytes], tuple[int, bytes]]


@dataclass
class ImportReport:
    files: int = 0
    bundles: int = 0
    resources: int = 0
    failed_resources: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.resources / self.seconds if self.seconds else 0.0


@dataclass(frozen=True, slots=True)
class Unit:
    """One request's worth of work: a Bundle body and how many resources it carries."""

    source: str
    body: bytes
    count: int
    creates: frozenset[tuple[str, str]] = frozenset()
    """(type, id) of the entries that were ``POST`` with an id, sent as ``PUT`` (:func:`_deterministic_ids`)."""
    sizes: tuple[tuple[tuple[str, str], int], ...] = ()
    """The serialised size of each of ``creates``: of copies of one resource, the largest is kept."""
    atomic: bool = False
    """A transaction: its 200 means every entry was written."""


def discover(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".json", ".ndjson") and p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    return found


def units(path: Path, *, batch_size: int) -> Iterator[Unit]:
    if path.suffix == ".ndjson":
        yield from _ndjson_units(path, batch_size)
        return
    raw = path.read_bytes()
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UsageError(
            f"{path}: not JSON ({exc}); expected a transaction/batch Bundle, a resource or NDJSON"
        ) from exc
    if (
        isinstance(document, dict)
        and document.get("resourceType") == "Bundle"
        and document.get("type") in ("transaction", "batch")
    ):
        entries = document.get("entry") or []
        sizes = _deterministic_ids(entries)
        body = orjson.dumps(document) if sizes else raw
        atomic = document.get("type") == "transaction"
        yield Unit(path.name, body, len(entries), frozenset(sizes), tuple(sizes.items()), atomic)
    elif isinstance(document, dict) and "resourceType" in document:
        yield Unit(path.name, _batch([document]), 1)
    else:
        raise UsageError(f"{path}: not a transaction/batch Bundle, a resource or NDJSON")


def _ndjson_units(path: Path, batch_size: int) -> Iterator[Unit]:
    pending: list[dict[str, Any]] = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise UsageError(f"{path}:{number}: not a JSON line ({exc})") from exc
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                raise UsageError(f"{path}:{number}: not a FHIR resource (no resourceType)")
            pending.append(resource)
            if len(pending) == batch_size:
                yield Unit(f"{path.name}:{number}", _batch(pending), len(pending))
                pending = []
    if pending:
        yield Unit(f"{path.name}:end", _batch(pending), len(pending))


_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
"""A FHIR id (datatypes.html#id)."""


def _deterministic_ids(entries: list[Any]) -> dict[tuple[str, str], int]:
    """Rewrite ``POST`` entries that name their id into ``PUT Type/id``, in place; which were, and
    the size of each resource."""
    changed: dict[tuple[str, str], int] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        request, resource = entry.get("request"), entry.get("resource")
        if not isinstance(request, dict) or not isinstance(resource, dict) or request.get("method") != "POST":
            continue
        rtype, url = resource.get("resourceType"), request.get("url")
        if request.get("ifNoneExist") or not isinstance(rtype, str) or url != rtype:
            continue
        full_url = entry.get("fullUrl")
        id_ = resource.get("id")
        if not id_ and isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
            id_ = full_url.removeprefix("urn:uuid:")
        if not isinstance(id_, str) or not _ID.fullmatch(id_):
            continue
        resource["id"] = id_
        entry["request"] = {**request, "method": "PUT", "url": f"{rtype}/{id_}"}
        changed[(rtype, id_)] = len(orjson.dumps(resource))
    return changed


def reuse_written(unit: Unit, written: set[tuple[str, str]]) -> Unit:
    """``unit`` with its converted creates of resources an earlier phase wrote sent as conditional
    creates on the id (``ifNoneExist: _id=...``): they find the stored resource and write nothing,
    so they neither overwrite it nor contend for it. Synthea repeats its Organizations and
    Practitioners, with less in them, in every patient's bundle."""
    shared = unit.creates & written
    if not shared:
        return unit
    document = orjson.loads(unit.body)
    for entry in document.get("entry") or []:
        resource, request = entry.get("resource") or {}, entry.get("request") or {}
        key = (resource.get("resourceType"), resource.get("id"))
        if request.get("method") == "PUT" and key in shared and request.get("url") == f"{key[0]}/{key[1]}":
            entry["request"] = {"method": "POST", "url": key[0], "ifNoneExist": f"_id={key[1]}"}
    return Unit(unit.source, orjson.dumps(document), unit.count, unit.creates - shared, (), unit.atomic)


def plan_phases(plan: list[Unit]) -> list[list[Unit]]:
    """The order of work: the units holding the fullest copy of a resource that several units
    create (Synthea's hospital and practitioner files), then the others, then those with
    conditional references (they may need what the others create)."""
    best: dict[tuple[str, str], tuple[int, int]] = {}
    counts: dict[tuple[str, str], int] = {}
    for number, unit in enumerate(plan):
        for key, size in unit.sizes:
            counts[key] = counts.get(key, 0) + 1
            if key not in best or size > best[key][0]:
                best[key] = (size, number)
    owners = {number for key, (_, number) in best.items() if counts[key] > 1}
    first = [u for n, u in enumerate(plan) if n in owners and not depends_on_others(u)]
    rest = [u for n, u in enumerate(plan) if n not in owners and not depends_on_others(u)]
    return [first, rest, [u for u in plan if depends_on_others(u)]]


def _batch(resources: list[dict[str, Any]]) -> bytes:
    entries = []
    for resource in resources:
        rtype = resource.get("resourceType")
        if resource.get("id"):
            request = {"method": "PUT", "url": f"{rtype}/{resource['id']}"}
        else:
            request = {"method": "POST", "url": str(rtype)}
        entries.append({"resource": resource, "request": request})
    return orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries})


_CONDITIONAL_REFERENCE = re.compile(rb'"reference"\s*:\s*"[A-Z][A-Za-z]*\?')


def depends_on_others(unit: Unit) -> bool:
    """A Bundle with a conditional reference (``Patient?identifier=...``) may need what another
    file creates (Synthea's patients refer to its hospital and practitioner bundles that way)."""
    return _CONDITIONAL_REFERENCE.search(unit.body) is not None


def run_import(
    paths: list[Path],
    post: Poster,
    *,
    jobs: int = 1,
    pool: Executor | None = None,
    batch_size: int = 500,
    progress: bool = True,
) -> ImportReport:
    """Send every unit of ``paths``, ``jobs`` at a time: with ``post`` in threads of this
    process, or through ``pool`` (``post`` then runs in its workers: the embedded mode's process pool,
    :func:`fhirflow.local.importing.embedded_pool`, posts with :func:`~fhirflow.local.importing.post_in_worker`).

    In phases (:func:`plan_phases`), each finished before the next starts, so that what a unit
    refers to or repeats is there; within each phase the order is free. A later phase's creates of
    resources an earlier phase's transactions wrote find them instead (:func:`reuse_written`).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    files = discover(paths)
    plan = [unit for path in files for unit in units(path, batch_size=batch_size)]
    phases = plan_phases(plan)
    total = sum(u.count for u in plan)
    report = ImportReport(files=len(files))
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.0f} resources/s"),
        TimeRemainingColumn(),
    )
    started = time.perf_counter()
    owned = pool is None and jobs > 1
    if owned:
        pool = ThreadPoolExecutor(jobs, thread_name_prefix="fhirflow-import")
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("importing", total=total, rate=0.0)

        written: set[tuple[str, str]] = set()

        def done(unit: Unit, status: int, body: bytes) -> None:
            _record(unit, status, body, report)
            if status == 200 and unit.atomic:
                written.update(unit.creates)
            elapsed = time.perf_counter() - started
            bar.update(task, advance=unit.count, rate=report.resources / elapsed if elapsed else 0.0)

        try:
            for number, listed in enumerate(phases):
                phase = [reuse_written(unit, written) for unit in listed] if number else listed
                if pool is None:
                    for unit in phase:
                        done(unit, *post(unit.body))
                else:
                    _run_phase(pool, phase, post, max(jobs, 1), done)
        finally:
            if owned and pool is not None:
                pool.shutdown()
    report.seconds = time.perf_counter() - started
    return report


def _run_phase(
    pool: Executor, phase: list[Unit], post: Poster, jobs: int, done: Callable[[Unit, int, bytes], None]
) -> None:
    """At most ``2 * jobs`` units in flight (each holds its Bundle in memory), results as they come."""
    waiting = iter(phase)
    in_flight: dict[Future[tuple[int, bytes]], Unit] = {}
    while True:
        while len(in_flight) < 2 * jobs and (unit := next(waiting, None)) is not None:
            in_flight[pool.submit(post, unit.body)] = unit
        if not in_flight:
            return
        finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        for future in finished:
            unit = in_flight.pop(future)
            try:
                status, body = future.result()
            except UsageError:
                raise  # no server there: every other unit would fail the same way
            except Exception as exc:  # a crashed worker fails its unit, not the import
                status, body = 599, orjson.dumps({"issue": [{"diagnostics": f"import worker failed: {exc!r}"}]})
            done(unit, status, body)


def _record(unit: Unit, status: int, body: bytes, report: ImportReport) -> None:
    report.bundles += 1
    if status != 200:
        report.failed_resources += unit.count
        report.failures.append(f"{unit.source}: HTTP {status}: {_diagnostics(body)}")
        return
    answer = orjson.loads(body)
    failed = [e for e in answer.get("entry", []) if not str(e.get("response", {}).get("status", "")).startswith("2")]
    report.resources += unit.count - len(failed)
    report.failed_resources += len(failed)
    for entry in failed[:5]:
        response = entry.get("response", {})
        report.failures.append(f"{unit.source}: {response.get('status')}: {_diagnostics(response.get('outcome'))}")


def _diagnostics(outcome: Any) -> str:
    if isinstance(outcome, bytes):
        try:
            outcome = orjson.loads(outcome)
        except orjson.JSONDecodeError:
            return str(outcome[:200].decode("utf-8", "replace"))
    if isinstance(outcome, dict):
        issues = outcome.get("issue") or [{}]
        return str(issues[0].get("diagnostics", ""))[:300]
    return ""


def http_poster(base_url: str, *, token: str | None = None, timeout: float = 600.0) -> Poster:
    import httpx

    headers = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def post(body: bytes) -> tuple[int, bytes]:
        try:
            reply = client.post("/", content=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
            raise UsageError(f"no FHIR server at {base_url}: {exc}") from exc
        return reply.status_code, reply.content

    return post
