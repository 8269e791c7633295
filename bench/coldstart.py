"""Cold-start import time of every service's Lambda handler, next to ``import boto3`` alone.

Each sample is a fresh interpreter that times one ``import`` statement with ``perf_counter``, which
is the part of a Lambda cold start that the code controls. The modules are measured in turns
(boto3, handler A, handler B, boto3, ...) so that the machine's noise falls on all of them alike,
after one discarded round that compiles the bytecode caches.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.loadgen import percentile
from bench.report import Row, Target

REPO = Path(__file__).resolve().parent.parent
BASELINE = "boto3"
MAX_RATIO = 1.5
_TIMER = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def handler_modules(repo: Path = REPO) -> dict[str, Path]:
    """``fhirflow_<name>.handler`` for every ``services/*/fhirflow_*/handler.py``, with the folder to import it from."""
    found = {}
    for handler in sorted(repo.glob("services/*/fhirflow_*/handler.py")):
        found[f"{handler.parent.name}.handler"] = handler.parent.parent
    return found


def import_seconds(module: str, env: dict[str, str]) -> float:
    completed = subprocess.run(
        [sys.executable, "-c", _TIMER.format(module=module)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"importing {module} failed: {completed.stderr.strip()[-1000:]}")
    return float(completed.stdout.strip().splitlines()[-1])


def _environment(folders: list[Path]) -> dict[str, str]:
    # The folders of services that are not installed yet go on PYTHONPATH; Lambda's own settings keep
    # Powertools quiet, as in the deployed functions.
    paths = [str(folder) for folder in folders]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }


def run(*, quick: bool) -> list[Row]:
    rounds = 7 if quick else 15
    handlers = handler_modules()
    env = _environment(list(handlers.values()))
    modules = [BASELINE, *handlers]
    samples: dict[str, list[float]] = {module: [] for module in modules}
    for round_number in range(rounds + 1):
        for module in modules:
            seconds = import_seconds(module, env)
            if round_number:  # round 0 writes the bytecode caches
                samples[module].append(seconds * 1000)
    baseline = statistics.median(samples[BASELINE])
    rows = [
        Row(
            "coldstart",
            f"import {BASELINE}",
            median_ms=baseline,
            p99_ms=percentile(samples[BASELINE], 99),
            samples=rounds,
            note="baseline",
        )
    ]
    for module in handlers:
        median = statistics.median(samples[module])
        ratio = median / baseline
        rows.append(
            Row(
                "coldstart",
                f"import {module}",
                median_ms=median,
                p99_ms=percentile(samples[module], 99),
                samples=rounds,
                target=Target(f"≤ {MAX_RATIO:g}x boto3 ({MAX_RATIO * baseline:.0f} ms)", ratio <= MAX_RATIO),
                note=f"{ratio:.2f}x boto3",
            )
        )
    return rows
