"""What goes into the Lambdas: the project's own packages (one code asset) and a dependencies layer.

The code asset is a plain copy of the import packages (``fhirflow``, ``fhirflow_contracts`` and
every ``services/*/fhirflow_*``), made by :func:`stage_code` before the stack is built: synth
stays offline, needs no Docker and installs nothing. One asset serves every function, because the
services share the kernel and the bundle service reuses the crud use cases (STYLE.md rule 7).

Third-party dependencies live in a layer that ``infra/build_layer.py`` builds (``make layer``)
with pip for the Lambda platform; tests point the layer at an empty placeholder directory.

Both ship bytecode compiled by a Python 3.12 (the Lambda runtime's version; :func:`python312`):
``/var/task`` and ``/opt`` are read-only, so without it every cold start compiles every module it
imports, 2.5-3 times the import time. The ``.pyc`` files are *unchecked-hash* ones (PEP 552):
the asset's zip does not keep modification times, which timestamp-checked bytecode would need.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = REPO_ROOT / "infra" / "build"
DEFAULT_CODE_DIR = BUILD_DIR / "code"
DEFAULT_LAYER_DIR = BUILD_DIR / "layer"

LAMBDA_PYTHON = (3, 12)
BYTECODE_TAG = "cpython-312"

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".mypy_cache", ".pytest_cache")


@dataclass(frozen=True, slots=True)
class ServicePackage:
    service: str
    """The folder under ``services/`` and the name routes use (``index-sync``)."""
    package: str
    """Its import package (``fhirflow_index_sync``)."""

    @property
    def handler(self) -> str:
        """The Lambda entry point every service defines (STYLE.md rule 1)."""
        return f"{self.package}.handler.lambda_handler"

    @property
    def function_service(self) -> str:
        """The function's name in its logs, metrics and traces (``POWERTOOLS_SERVICE_NAME``)."""
        return self.service


def service_packages(repo_root: Path = REPO_ROOT) -> dict[str, ServicePackage]:
    """The services that exist in the repo, by service name: each folder with a Lambda handler."""
    found: dict[str, ServicePackage] = {}
    for handler in sorted((repo_root / "services").glob("*/fhirflow_*/handler.py")):
        service = handler.parent.parent.name
        found[service] = ServicePackage(service=service, package=handler.parent.name)
    return found


def package_sources(repo_root: Path = REPO_ROOT) -> list[Path]:
    """The import packages the code asset holds, as folders in the repo."""
    sources = [repo_root / "fhirflow", repo_root / "contracts" / "fhirflow_contracts"]
    sources += [repo_root / "services" / p.service / p.package for p in service_packages(repo_root).values()]
    return sources


def stage_code(out_dir: Path = DEFAULT_CODE_DIR, *, repo_root: Path = REPO_ROOT) -> Path:
    """Copy the packages side by side into ``out_dir`` (emptied first), the layout Lambda imports from."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    for source in package_sources(repo_root):
        shutil.copytree(source, out_dir / source.name, ignore=_IGNORED)
    compile_bytecode(out_dir)
    return out_dir


def python312() -> str:
    """A Python 3.12 interpreter: this one if it is 3.12, else ``FHIRFLOW_PYTHON312``, pyenv's, or
    ``python3.12`` on the PATH. Bytecode is version-specific: only 3.12's is of use in Lambda."""
    if sys.version_info[:2] == LAMBDA_PYTHON:
        return sys.executable
    candidates = [os.environ.get("FHIRFLOW_PYTHON312", "")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python")), reverse=True)
    candidates.append(shutil.which("python3.12") or "")
    for candidate in filter(None, candidates):
        if Path(candidate).is_file():
            return candidate
    raise FileNotFoundError(
        "Python 3.12 is needed to precompile the Lambda code (its runtime's bytecode): install it "
        "(pyenv install 3.12) or point FHIRFLOW_PYTHON312 at one"
    )


def compile_bytecode(root: Path) -> None:
    """``__pycache__/*.cpython-312.pyc`` beside every module under ``root``, unchecked-hash."""
    command = [python312(), "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash"]
    subprocess.run([*command, str(root)], check=True)


def require_layer(layer_dir: Path) -> Path:
    """A layer directory must hold ``python/`` (Lambda puts ``/opt/python`` on ``sys.path``)."""
    if not (layer_dir / "python").is_dir():
        raise FileNotFoundError(
            f"No dependencies layer at {layer_dir}: build it with `make layer` (infra/build_layer.py), "
            "or pass -c fhirflow:layerDir=<a directory holding python/>"
        )
    return layer_dir
