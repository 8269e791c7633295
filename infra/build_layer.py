#!/usr/bin/env python3
"""Build the Lambda dependencies layer: fhirflow's runtime requirements for Python 3.12 on arm64.

    .venv/bin/python infra/build_layer.py [--out infra/build/layer]
    .venv/bin/python infra/build_layer.py --lock      # after changing the requirements

The requirements are the ``[project] dependencies`` and the ``aws`` extra of pyproject.toml (one
list for both modes), less what only the embedded mode uses and what no Lambda imports. The
layer installs exactly the versions pinned in ``infra/layer.lock`` (every distribution, the
transitive ones too, without resolving again), which ``--lock`` writes from what pip resolves for
those requirements. pip downloads wheels for the Lambda platform (Amazon Linux 2023, glibc 2.34,
aarch64), so this runs anywhere but needs the package index; synth and the tests never run it.

The layer ships bytecode compiled by Python 3.12, unchecked-hash (``fhirflow_infra.packaging``):
``/opt`` is read-only, and without it every cold start compiles what it imports.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from fhirflow_infra.packaging import compile_bytecode

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "infra" / "build" / "layer"
EMBEDDED_ONLY = frozenset({"uvicorn", "rich", "httpx"})
"""The local gateway's server, the CLI's console output and its HTTP client (``fhirflow import
--url``); no Lambda imports them."""
NEVER_IMPORTED = frozenset({"opensearch-protobufs", "protobuf", "grpcio"})
"""In the requirements, or required by them, but imported by no Lambda: opensearch-py 3's gRPC
transport (opensearch-protobufs, protobuf, grpcio: 30 MB), which the HTTP client it is used
through never imports. tests/infra checks that everything else is imported. (aws-xray-sdk and its
wrapt are imported by Powertools Tracer, on the first invocation where tracing is on:
fhirflow.tracing.)"""
IMPORT_NAMES = {
    "aws-lambda-powertools": "aws_lambda_powertools",
    "opensearch-py": "opensearchpy",
    "google-re2": "re2",
    "aws-xray-sdk": "aws_xray_sdk",
}
"""Import names that differ from the distribution's."""
LOCK = REPO_ROOT / "infra" / "layer.lock"
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")
TWIN_PLATFORMS = tuple(platform.replace("aarch64", "x86_64") for platform in PLATFORMS)
"""The x86_64 twin (``--x86-64-twin``): the same pinned versions for this kind of machine, so that
``bench --only coldstart`` can import the layer as built; it is never deployed."""
TWIN_OUT = REPO_ROOT / "infra" / "build" / "layer-x86_64"
PYTHON_VERSION = "3.12"


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    if match is None:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    return match.group(0).lower().replace("_", "-")


def requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = list(project["dependencies"]) + list(project.get("optional-dependencies", {}).get("aws", []))
    return [r for r in wanted if requirement_name(r) not in EMBEDDED_ONLY | NEVER_IMPORTED]


def _pip(*arguments: str, platforms: tuple[str, ...] = PLATFORMS) -> list[str]:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    command += ["--implementation", "cp", "--python-version", PYTHON_VERSION, "--only-binary=:all:"]
    for platform in platforms:
        command += ["--platform", platform]
    return [*command, *arguments]


def locked(lock: Path = LOCK) -> list[str]:
    """The lock's ``name==version`` lines."""
    return [line for line in (s.strip() for s in lock.read_text().splitlines()) if line and not line.startswith("#")]


def write_lock(lock: Path = LOCK) -> Path:
    """Resolve the requirements for the Lambda platform (no install) and pin what pip chose."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        target = Path(scratch) / "target"
        subprocess.run(
            _pip("--dry-run", "--ignore-installed", "--target", str(target), "--report", str(report), *requirements()),
            check=True,
        )
        chosen = json.loads(report.read_text())["install"]
    pins = sorted(
        f"{requirement_name(item['metadata']['name'])}=={item['metadata']['version']}"
        for item in chosen
        if requirement_name(item["metadata"]["name"]) not in NEVER_IMPORTED
    )
    header = "# The dependencies layer, pinned: `.venv/bin/python infra/build_layer.py --lock` writes it.\n"
    lock.write_text(header + "\n".join(pins) + "\n")
    return lock


def build(out: Path, *, platforms: tuple[str, ...] = PLATFORMS) -> Path:
    if out.exists():
        shutil.rmtree(out)
    target = out / "python"  # Lambda puts /opt/python on sys.path
    subprocess.run(_pip("--no-deps", "--target", str(target), *locked(), platforms=platforms), check=True)
    shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts: nothing runs them in Lambda
    compile_bytecode(target)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, help=f"layer directory (default: {DEFAULT_OUT}, or {TWIN_OUT} for the twin)"
    )
    parser.add_argument("--lock", action="store_true", help=f"write {LOCK.name} from the requirements instead")
    parser.add_argument(
        "--x86-64-twin", action="store_true", help="the same pinned layer for x86_64 (the cold-start bench's)"
    )
    args = parser.parse_args(argv)
    if args.lock:
        print(f"pinned in {write_lock()}")  # noqa: T201 - a build script's report
        return 0
    twin = args.x86_64_twin
    out = build(args.out or (TWIN_OUT if twin else DEFAULT_OUT), platforms=TWIN_PLATFORMS if twin else PLATFORMS)
    print(f"layer ready in {out}")  # noqa: T201 - a build script's report
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
