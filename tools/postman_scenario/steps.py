"""The vocabulary of the Postman scenario: a request step, and the test-script snippets (Postman
sandbox JavaScript) its assertions are written with. Used by tools/gen_postman.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

FHIR_JSON = "application/fhir+json"
IDENT = "urn:fhirflow:newman|{{runTag}}"
"""The identifier of this run's Patient: unique per run, so runs against one server never meet."""
P = "{{patientId}}"
"""The id of this run's Patient, once created."""
MAX_POLLS = 120
POLL_MS = 500
"""A polled job gets at most MAX_POLLS status requests, POLL_MS apart (a minute), then fails."""


@dataclass(frozen=True)
class Step:
    route: tuple[str, str]
    """(method, pattern) of the route in fhirflow.routes.ROUTES this request exercises."""
    name: str
    path: str
    """After ``{{baseUrl}}``, with ``{{variables}}``; no query string."""
    tests: list[str]
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None
    """JSON (sent as FHIR JSON), a str (sent raw, with the Content-Type in ``headers``), or a
    list of (key, value) pairs (sent as a form)."""
    prerequest: list[str] = field(default_factory=list)


# ---- test-script snippets (Postman sandbox JavaScript) ------------------------------------------


def status(*codes: int) -> str:
    wanted = ", ".join(str(c) for c in codes)
    title = "status is " + " or ".join(str(c) for c in codes)
    return f'pm.test("{title}", () => pm.expect(pm.response.code).to.be.oneOf([{wanted}]));'


def check(title: str, expression: str) -> str:
    return f"pm.test({json.dumps(title)}, () => pm.expect({expression}).to.be.true);"


def save(variable: str, expression: str) -> str:
    return f"pm.collectionVariables.set({json.dumps(variable)}, String({expression}));"


JSON_BODY = "const body = pm.response.json();"
LOCATION_ID = "(pm.response.headers.get('Content-Location') || '').split('/').pop()"
"""The job id at the end of an async kick-off's status URL (async.html, bulk data export.html)."""


def bundle(kind: str, *, at_least: int = 0) -> list[str]:
    lines = [JSON_BODY, check(f"a {kind} Bundle", f"body.resourceType === 'Bundle' && body.type === '{kind}'")]
    if at_least:
        lines.append(check(f"at least {at_least} entries", f"(body.entry || []).length >= {at_least}"))
    return lines


def outcome_of(code: int) -> list[str]:
    return [status(code), JSON_BODY, check("an OperationOutcome", "body.resourceType === 'OperationOutcome'")]


def polled(name: str, counter: str, done: list[str]) -> list[str]:
    """A status URL polled with setNextRequest until it stops answering 202 (bounded)."""
    return [
        f"const polls = Number(pm.collectionVariables.get({json.dumps(counter)}) || '0');",
        f"if (pm.response.code === 202 && polls < {MAX_POLLS}) {{",
        f"  pm.collectionVariables.set({json.dumps(counter)}, String(polls + 1));",
        f"  postman.setNextRequest({json.dumps(name)});",
        f"  setTimeout(() => {{}}, {POLL_MS});",
        "} else {",
        *("  " + line for line in done),
        "}",
    ]
