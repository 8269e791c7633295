"""Real FHIR clients drive the server through every everyday interaction (issue 15, first must-show):
fhirpy (its sync client on requests and its asyncio client on aiohttp) and fhirclient (PyPI), and
fhir-kit-client and @medplum/core (npm, run by node).

Each plays the same scenario (tests/e2e/clients/scenario.py) with its own API: create, read, update,
conditional create and update, patch in its own form, delete, search paging over 300+ results to the
last ``next`` link, ``_include``, history, batch and transaction, ``Patient/{id}/$everything`` and
``/metadata``; the test checks the ids, versions, statuses and counts it saw. An operation a client
does not offer is reported with its reason (a ``ClientLimitation`` warning in pytest's summary) and the
same state is reached with what the client does offer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.clients.scenario import (
    Population,
    ScenarioInput,
    failures,
    load_population,
    scenario_input,
    unsupported,
)


class ClientLimitation(UserWarning):
    """An operation a client does not offer (shown in pytest's warnings summary, never skipped silently)."""


CLIENTS_DIR = Path(__file__).parent / "clients"
NODE_MODULES = Path(__file__).parents[2] / "node_modules"


@pytest.fixture(scope="module", params=["serve", "api-gateway-rules"])
def base_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The e2e server, then one in API Gateway rules mode (``serve --api-gateway-rules``: requests and
    answers encoded and limited as API Gateway REST and Lambda do), so the clients meet what a deployed
    stack answers too. That one is addressed with a path in its base (a tenant, ``/tenant/{id}``), as a
    deployed base has one (the stage, a tenant): each client must keep it in every URL it builds and
    the server in every link and Location it answers."""
    if request.param == "serve":
        yield request.getfixturevalue("server").base_url
        return
    data_dir = tmp_path_factory.mktemp("clients-apigateway")
    with LocalServer(data_dir=data_dir, extra_args=("--api-gateway-rules",)) as gateway:
        yield f"{gateway.base_url}/tenant/clients"


@pytest.fixture(scope="module")
def population(base_url: str) -> Population:
    return load_population(base_url)


def _check(given: ScenarioInput, report: dict[str, Any]) -> None:
    for operation, reason in unsupported(report).items():
        warnings.warn(ClientLimitation(f"{given.client} has no {operation}: {reason}"), stacklevel=2)
    problems = failures(given, report)
    assert not problems, f"{given.client}:\n" + "\n".join(problems)


def test_fhirpy(base_url: str, population: Population) -> None:
    from tests.e2e.clients import fhirpy_driver

    given = scenario_input(base_url, "fhirpy", population)
    _check(given, fhirpy_driver.play(given))


def test_fhirpy_async(base_url: str, population: Population) -> None:
    from tests.e2e.clients import fhirpy_async_driver

    given = scenario_input(base_url, "fhirpy-async", population)
    _check(given, fhirpy_async_driver.play(given))


def test_fhirclient(base_url: str, population: Population) -> None:
    from tests.e2e.clients import fhirclient_driver

    given = scenario_input(base_url, "fhirclient", population)
    _check(given, fhirclient_driver.play(given))


def _node_driver(script: str, package: str, given: ScenarioInput) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / package).is_dir():
        pytest.skip(f"{package} needs node and `npm ci` (make setup); not installed here")
    done = subprocess.run(
        [node, str(CLIENTS_DIR / script)],
        input=json.dumps(given.as_json()),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip(), f"{script} printed no report: {done.stderr[-4000:]}"
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_fhir_kit_client(base_url: str, population: Population) -> None:
    given = scenario_input(base_url, "fhir-kit-client", population)
    _check(given, _node_driver("fhir_kit_client.mjs", "fhir-kit-client", given))


def test_medplum_core(base_url: str, population: Population) -> None:
    given = scenario_input(base_url, "medplum", population)
    _check(given, _node_driver("medplum_core.mjs", "@medplum/core", given))


def test_the_checks_name_every_wrong_outcome(base_url: str, population: Population) -> None:
    """The checks above can fail: a report whose values are all wrong for one operation is caught there."""
    from tests.e2e.clients import fhirpy_driver

    given = scenario_input(base_url, "fhirpy", population)
    report = fhirpy_driver.play(given)
    assert failures(given, report) == []
    for operation, outcome in report.items():
        tampered = report | {operation: dict.fromkeys(outcome, "tampered")}
        assert any(line.startswith(f"{operation}:") for line in failures(given, tampered)), operation
