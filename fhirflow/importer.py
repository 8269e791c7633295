"""``fhirflow import``: load transaction/batch Bundles and NDJSON into fhirflow.

Each Bundle file is posted as it is (a transaction stays one atomic transaction); NDJSON
files are cut into batch Bundles of ``--batch-size`` resources (``PUT`` where a resource has
an id, so re-running an import does not duplicate it). The target is either a running server
(``--url``) or the embedded store in a data directory, in-process, through the same bundle
handler the server would call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

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


def discover(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".json", ".ndjson") and p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(path)
    return found


def units(path: Path, *, batch_size: int) -> Iterator[Unit]:
    if path.suffix == ".ndjson":
        yield from _ndjson_units(path, batch_size)
        return
    raw = path.read_bytes()
    document = orjson.loads(raw)
    if (
        isinstance(document, dict)
        and document.get("resourceType") == "Bundle"
        and document.get("type") in ("transaction", "batch")
    ):
        yield Unit(path.name, raw, len(document.get("entry") or []))
    elif isinstance(document, dict) and "resourceType" in document:
        yield Unit(path.name, _batch([document]), 1)
    else:
        raise ValueError(f"{path}: not a transaction/batch Bundle, a resource or NDJSON")


def _ndjson_units(path: Path, batch_size: int) -> Iterator[Unit]:
    pending: list[dict[str, Any]] = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            pending.append(orjson.loads(line))
            if len(pending) == batch_size:
                yield Unit(f"{path.name}:{number}", _batch(pending), len(pending))
                pending = []
    if pending:
        yield Unit(f"{path.name}:end", _batch(pending), len(pending))


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


def run_import(paths: list[Path], post: Poster, *, batch_size: int = 500, progress: bool = True) -> ImportReport:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    files = discover(paths)
    plan = [(path, list(units(path, batch_size=batch_size))) for path in files]
    total = sum(u.count for _, file_units in plan for u in file_units)
    report = ImportReport(files=len(files))
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.0f} resources/s"),
        TimeRemainingColumn(),
    )
    started = time.perf_counter()
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("importing", total=total, rate=0.0)
        for _path, file_units in plan:
            for unit in file_units:
                _send(unit, post, report)
                elapsed = time.perf_counter() - started
                bar.update(task, advance=unit.count, rate=report.resources / elapsed if elapsed else 0.0)
    report.seconds = time.perf_counter() - started
    return report


def _send(unit: Unit, post: Poster, report: ImportReport) -> None:
    status, body = post(unit.body)
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
        reply = client.post("/", content=body)
        return reply.status_code, reply.content

    return post


def embedded_poster() -> Poster:
    """Post through the bundle service's own handler, in this process (settings from the environment)."""
    from fhirflow.local.gateway import LocalGateway

    gateway = LocalGateway()
    headers = [(b"host", b"localhost"), (b"content-type", b"application/fhir+json"), (b"prefer", b"return=minimal")]

    def post(body: bytes) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "query_string": b"",
            "headers": headers,
            "scheme": "http",
            "client": ("127.0.0.1", 0),
        }
        result = gateway.dispatch(scope, body)
        return int(result["statusCode"]), str(result.get("body") or "").encode()

    return post
