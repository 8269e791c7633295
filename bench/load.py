"""``fhirflow import`` of ../shared/synthea: resources per second through the whole write path.

Embedded: the command a user runs (``fhirflow import DIR --data-dir ...``: worker processes that
post each Synthea transaction through the bundle handler in-process — parsing, reference
rewriting, validation, the store, the search index and the change events, all included). The
rate is the command's own (from its first bundle to its last answer), so process start-up is
outside it; the wall time of the whole command is in the note. Target: ≥ 2,000 resources/s.

DynamoDB Local, for comparison: a sample of the bundles posted to ``fhirflow serve --store
dynamodb`` (the transaction protocol of the AWS mode, batches of 25 TransactWriteItems), where
Java is installed; no target (DynamoDB Local is a functional stand-in, tens of milliseconds a call).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.report import Row, at_least
from fhirflow.local import dynamodb_local
from fhirflow.local.launcher import LocalServer

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "synthea"
IMPORT_PER_S = 2000.0
_SUMMARY = re.compile(r"imported (\d+) resources from \d+ files in ([\d.]+) s \((\d+) resources/s\); (\d+) failed")
DYNAMODB_SAMPLE = 4


def _import(args: list[str], env: dict[str, str]) -> tuple[int, float, int, float]:
    """(resources, seconds, failed, wall seconds) of one ``fhirflow import``."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "fhirflow.cli", "import", "--no-progress", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    wall = time.perf_counter() - started
    found = _SUMMARY.search(done.stdout)
    if found is None:
        raise RuntimeError(f"fhirflow import failed ({done.returncode}): {(done.stdout + done.stderr)[-400:]}")
    return int(found[1]), float(found[2]), int(found[4]), wall


def embedded(*, quick: bool) -> Row:
    files = sorted(SYNTHEA.glob("*.json"))
    if quick:
        files = files[:8]
    with tempfile.TemporaryDirectory(prefix="fhirflow-bench-import-") as tmp:
        resources, seconds, failed, wall = _import(
            [*map(str, files), "--data-dir", tmp], {**os.environ, "FHIRFLOW_DATA_DIR": tmp}
        )
    rate = resources / seconds
    jobs = min(os.cpu_count() or 1, 4)
    return Row(
        bench="import (sqlite)",
        case=f"{len(files)} Synthea bundles ({resources:,} resources)",
        throughput=rate,
        errors=failed,
        target=at_least(rate, IMPORT_PER_S, "resources/s"),
        note=f"{jobs} worker processes; {wall:.1f} s wall for the whole command",
    )


def on_dynamodb_local() -> Row:
    label = "import (dynamodb-local)"
    reason = dynamodb_local.unavailable_reason()
    if reason is not None:
        return Row(label, "sample", note=f"skipped: {reason}")
    files = [f for f in sorted(SYNTHEA.glob("*.json")) if "Information" not in f.name][:DYNAMODB_SAMPLE]
    with tempfile.TemporaryDirectory(prefix="fhirflow-bench-import-ddb-") as tmp, dynamodb_local.running() as endpoint:
        server_args = (
            "--store",
            "dynamodb",
            "--dynamodb-endpoint",
            endpoint,
            "--dynamodb-table",
            f"b-{uuid.uuid4().hex[:8]}",
        )
        with LocalServer(data_dir=Path(tmp), extra_args=server_args) as server:
            resources, seconds, failed, _ = _import([*map(str, files), "--url", server.base_url], dict(os.environ))
    return Row(
        bench=label,
        case=f"{len(files)} Synthea bundles ({resources:,} resources)",
        throughput=resources / seconds,
        errors=failed,
        note="Step Functions protocol on DynamoDB Local (no target)",
    )


def run(*, quick: bool, dynamodb: bool = True) -> list[Row]:
    if not SYNTHEA.exists():
        raise RuntimeError(f"the Synthea bundles are not at {SYNTHEA}")
    rows = [embedded(quick=quick)]
    if dynamodb:
        try:
            rows.append(on_dynamodb_local())
        except (RuntimeError, OSError) as error:
            rows.append(Row("import (dynamodb-local)", "sample", note=f"failed: {error}"[:300]))
    return rows
