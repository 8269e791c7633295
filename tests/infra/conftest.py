"""tests/infra: synthesize the CDK app once per session, offline, and hand the template to the tests.

The app is built the way ``infra/app.py`` builds it (same context from ``infra/cdk.json``, same
cdk-nag packs), with the code staged into a temporary directory and an empty placeholder for the
dependencies layer, which ``infra/build_layer.py`` fills for a real deployment.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
if str(INFRA_DIR) not in sys.path:
    sys.path.insert(0, str(INFRA_DIR))  # fhirflow_infra is the CDK app's package, not part of the product
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "1")

if TYPE_CHECKING:
    from aws_cdk.assertions import Template

    from fhirflow_infra.stack import FhirflowStack

DEPLOYER_SETTINGS = {
    "auth": "smart",
    "auth_issuer": "https://idp.example.org/realms/fhir",
    "auth_jwks_uri": "https://idp.example.org/realms/fhir/jwks",
    "auth_audience": "https://fhir.example.org",
}
"""What a deployer puts in the ``fhirflow:settings`` context (authorization is mandatory in AWS)."""

_CREDENTIALS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "CDK_DEFAULT_ACCOUNT",
    "CDK_DEFAULT_REGION",
)


def cdk_context(**overrides: Any) -> dict[str, Any]:
    context: dict[str, Any] = json.loads((INFRA_DIR / "cdk.json").read_text())["context"]
    return {**context, "fhirflow:settings": DEPLOYER_SETTINGS, **overrides}


@contextmanager
def without_aws_credentials() -> Iterator[None]:
    saved = {name: os.environ.pop(name) for name in _CREDENTIALS if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


@dataclass
class Synthesized:
    stack: FhirflowStack
    template: dict[str, Any]
    assertions: Template
    assembly_dir: Path
    code_dir: Path
    missing_context: list[Any]

    def resources(self, type_: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.template["Resources"].items() if v["Type"] == type_}

    def only(self, type_: str) -> tuple[str, dict[str, Any]]:
        found = self.resources(type_)
        assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
        return next(iter(found.items()))

    def logical_id(self, construct: Any) -> str:
        return str(self.stack.get_logical_id(construct.node.default_child))


def make_layer_placeholder(root: Path) -> Path:
    layer = root / "layer"
    (layer / "python").mkdir(parents=True)
    (layer / "python" / "README").write_text("placeholder: infra/build_layer.py builds the real layer\n")
    return layer


@contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    with lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _assembly_dir(tmp_path_factory: pytest.TempPathFactory, own: Path) -> tuple[Path, Path | None]:
    """Where the cloud assembly goes, and the lock under which to make it. Under pytest-xdist the
    workers share one assembly (the directory above their base temps is this run's): the first
    synthesizes it, the others build the same construct tree and read it, saving a synth each."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return own, None
    shared = tmp_path_factory.getbasetemp().parent
    return shared / "infra-cdk.out", shared / "infra-cdk.lock"


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    from aws_cdk import App
    from aws_cdk.assertions import Template

    from fhirflow_infra.application import build

    root = tmp_path_factory.mktemp("infra")
    assembly_dir, lock = _assembly_dir(tmp_path_factory, root / "cdk.out")
    with _exclusive(lock) if lock else contextlib.nullcontext(), without_aws_credentials():
        done = assembly_dir / "synthesized"
        reuse = done.exists()
        app = App(context=cdk_context(**{"fhirflow:alarmEmail": "ops@example.org"}), outdir=str(assembly_dir))
        stack = build(app, code_dir=root / "code", layer_dir=make_layer_placeholder(root))
        if not reuse:
            app.synth()  # cdk-nag runs here: an unacknowledged finding fails the synth
            done.touch()
    template = json.loads((assembly_dir / f"{stack.artifact_id}.template.json").read_text())
    return Synthesized(
        stack=stack,
        template=template,
        assertions=Template.from_json(template),
        assembly_dir=assembly_dir,
        code_dir=root / "code",
        # Context the app asked the account for (lookups); read from the file, as jsii can't map the manifest.
        missing_context=json.loads((assembly_dir / "manifest.json").read_text()).get("missing", []),
    )


# DynamoDB Local for the executed-stack tests (test_stack_executed.py).
from tests.support.dynamodb_local import dynamodb_local  # noqa: E402, F401
