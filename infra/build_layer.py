#!/usr/bin/env python3
"""Build the Lambda dependencies layer: fhirflow's runtime requirements for Python 3.12 on arm64.

    .venv/bin/python infra/build_layer.py [--out infra/build/layer]

The requirements are the ``[project] dependencies`` and the ``aws`` extra of pyproject.toml (one
list for both modes), less what only the embedded mode uses. pip downloads wheels for the Lambda
platform (Amazon Linux 2023, glibc 2.34, aarch64), so this runs anywhere but needs the package
index; synth and the tests never run it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "infra" / "build" / "layer"
EMBEDDED_ONLY = frozenset({"uvicorn", "rich"})
"""The local gateway's server and the CLI's console output; no Lambda imports them."""
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")
PYTHON_VERSION = "3.12"


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    if match is None:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    return match.group(0).lower().replace("_", "-")


def requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = list(project["dependencies"]) + list(project.get("optional-dependencies", {}).get("aws", []))
    return [r for r in wanted if requirement_name(r) not in EMBEDDED_ONLY]


def build(out: Path) -> Path:
    if out.exists():
        shutil.rmtree(out)
    target = out / "python"  # Lambda puts /opt/python on sys.path
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    command += ["--target", str(target), "--implementation", "cp", "--python-version", PYTHON_VERSION]
    command += ["--only-binary=:all:"]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run([*command, *requirements()], check=True)
    for cache in target.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="layer directory (default: %(default)s)")
    args = parser.parse_args(argv)
    out = build(args.out)
    print(f"layer ready in {out}")  # noqa: T201 - a build script's report
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
