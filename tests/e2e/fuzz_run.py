"""``make fuzz``: a long fuzz run over HTTP that counts instead of stopping at the first failure.

The request shapes are those of the short property tests in ``make test`` (fuzzing.py: writes with
odd tenants, ids, narratives, large bodies and every header; reads and searches with chains,
``_has``, totals, long OR lists and words SQLite's tokenizer splits). It starts a real server (two
processes on one data directory), sends ``--requests`` of them one after another, and reports:

- the number of 5xx answers (each one a bug; the first few are printed);
- the number of connections dropped without an answer;
- the number of rejected requests (4xx, or no answer) after which anything stored had changed: the store's
  version rows, heads and uniqueness claims, the search index's resources, and the body files in
  the blob store, read from the data directory around each rejected write.

Exit status 1 when either count is not zero. ``python -m tests.e2e.fuzz_run --help`` for options.
"""

from __future__ import annotations

import argparse
import collections
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fhirflow.local.launcher import LocalServer
from tests.e2e.fuzzing import KNOWN, reads, requests, seed
from tests.e2e.support import FHIR_JSON

WRITES = frozenset(("POST", "PUT", "PATCH", "DELETE"))


def stored_state(data_dir: Path) -> tuple[Any, ...]:
    """What a rejected request must not change, read straight from the data directory."""
    conn = sqlite3.connect(f"file:{data_dir / 'fhirflow.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        rows = tuple(
            conn.execute(statement).fetchone()
            for statement in (
                "SELECT count(*), max(seq) FROM versions",
                "SELECT count(*), total(version) FROM heads",
                "SELECT count(*) FROM uniques",
                "SELECT count(*), max(rid) FROM search_resource",
            )
        )
    finally:
        conn.close()
    blobs = data_dir / "blobs" / "resources"
    files = sum(1 for path in blobs.rglob("*") if path.is_file()) if blobs.is_dir() else 0
    return (*rows, files)


class Tally:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.sent = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.server_errors: list[str] = []
        self.changed_on_rejection: list[str] = []
        self.transport_errors: list[str] = []

    def send(self, http: httpx.Client, sent: dict[str, Any]) -> None:
        write = sent["method"] in WRITES
        before = stored_state(self.data_dir) if write else None
        self.sent += 1
        try:
            reply = http.request(
                sent["method"],
                sent["url"],
                content=sent.get("content"),
                headers=sent.get("headers"),
                params=sent.get("params"),
            )
        except httpx.TransportError as exc:  # a dropped connection is as bad as a 5xx
            where = f"{sent['method']} {sent['url'][:200]}: {exc!r}"
            self.transport_errors.append(where)
            if before is not None and stored_state(self.data_dir) != before:
                self.changed_on_rejection.append(f"{where} (no answer, but stored)")
            return
        self.statuses[reply.status_code] += 1
        where = f"{sent['method']} {sent['url'][:200]} -> {reply.status_code} {reply.text[:200]}"
        if reply.status_code >= 500:
            self.server_errors.append(where)
        elif reply.status_code >= 400 and before is not None and stored_state(self.data_dir) != before:
            self.changed_on_rejection.append(where)

    def report(self, seconds: float) -> str:
        lines = [
            f"fuzz: {self.sent} requests in {seconds:.0f} s ({self.sent / max(seconds, 1e-9):.0f}/s)",
            "statuses: " + ", ".join(f"{status}: {count}" for status, count in sorted(self.statuses.items())),
            f"5xx answers: {len(self.server_errors)}",
            f"dropped connections: {len(self.transport_errors)}",
            f"stored changes on rejected requests: {len(self.changed_on_rejection)}",
        ]
        for title, found in (
            ("5xx", self.server_errors),
            ("dropped", self.transport_errors),
            ("changed on rejection", self.changed_on_rejection),
        ):
            lines.extend(f"  {title}: {example}" for example in found[:10])
        return "\n".join(lines)

    @property
    def failed(self) -> bool:
        return bool(self.server_errors or self.changed_on_rejection or self.transport_errors)


_any_request = st.one_of(
    requests(),
    requests(),
    reads().map(lambda url: {"method": "GET", "url": url, "headers": {"Accept": FHIR_JSON}}),
)


def run(total: int, data_dir: Path, workers: int) -> Tally:
    tally = Tally(data_dir)
    with (
        LocalServer(data_dir=data_dir, workers=workers) as server,
        httpx.Client(base_url=server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=120) as http,
    ):
        for rtype, id_, resource in KNOWN:
            http.put(f"/{rtype}/{id_}", json=resource).raise_for_status()
        http.delete("/Patient/prop-deleted").raise_for_status()
        seed(http)

        @settings(
            max_examples=total,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(sent=_any_request)
        def fuzz(sent: dict[str, Any]) -> None:
            tally.send(http, sent)

        fuzz()
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.fuzz_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000, help="how many requests to send (default 50,000)")
    parser.add_argument("--workers", type=int, default=2, help="server processes on the one data directory")
    parser.add_argument("--data-dir", type=Path, help="the server's data directory (default: a temporary one)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.data_dir is not None:
        tally = run(args.requests, args.data_dir, args.workers)
    else:
        with tempfile.TemporaryDirectory(prefix="fhirflow-fuzz-") as tmp:
            tally = run(args.requests, Path(tmp), args.workers)
    sys.stdout.write(tally.report(time.monotonic() - started) + "\n")
    return 1 if tally.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
