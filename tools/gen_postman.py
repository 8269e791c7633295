"""Generate the Postman collection and environments in postman/ from the route table.

Development-time only: ``python tools/gen_postman.py`` writes the files, ``--check`` exits 1 when
the committed ones differ from what the route table gives now (tests/unit/test_postman_collection.py
runs the same comparison, so the collection never drifts from the routes).

How the route table drives it: every request below names the route it exercises, and its path is
matched with the route table (fhirflow.routes.ROUTE_TABLE, the same matcher the local gateway
uses) — a request whose path lands on another route, or a step naming a route that no longer
exists, stops the generator. Every route of the table (the ``/tenant/{tenant}`` copies aside: point
``baseUrl`` at a tenant's base to run them) is exercised by at least one request; a route with no
scripted step yet gets a generated request in the folder "Other routes" that checks only that the
server answers it without a 5xx. The steps add what a table cannot know: bodies, the order of a
scenario, and the assertions (Postman v2.1 test scripts, run by newman in make test); they live in
tools/postman_scenario/.

Output is deterministic (no random ids, sorted environment keys), so regenerating gives the
committed bytes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from postman_scenario import FOLDERS  # noqa: E402
from postman_scenario.steps import FHIR_JSON, P, Step  # noqa: E402

from fhirflow.routes import ROUTE_TABLE, ROUTES, TENANT_PREFIX  # noqa: E402

OUT_DIR = ROOT / "postman"
COLLECTION = "fhirflow.postman_collection.json"
LOCAL_ENV = "fhirflow-local.postman_environment.json"
AWS_ENV = "fhirflow-aws.postman_environment.json"
SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"

# ---- building the collection ---------------------------------------------------------------------

AUTH_PREREQUEST = [
    "// OAuth 2 client credentials (SMART Backend Services style, client secret): when the environment",
    "// names a tokenUrl, fetch a token with its scope once and reuse it until shortly before it expires.",
    "const tokenUrl = pm.variables.get('tokenUrl');",
    "if (tokenUrl) {",
    "  const now = Date.now();",
    "  const expires = Number(pm.variables.get('accessTokenExpires') || '0');",
    "  const sendWithToken = (token) => pm.request.headers.upsert({ key: 'Authorization', value: 'Bearer ' + token });",
    "  if (pm.variables.get('accessToken') && now < expires) {",
    "    sendWithToken(pm.variables.get('accessToken'));",
    "  } else {",
    "    pm.sendRequest({",
    "      url: tokenUrl,",
    "      method: 'POST',",
    "      header: {",
    "        'Content-Type': 'application/x-www-form-urlencoded',",
    "        Authorization: 'Basic ' + btoa(pm.variables.get('clientId') + ':' + pm.variables.get('clientSecret')),",
    "      },",
    "      body: { mode: 'urlencoded', urlencoded: [",
    "        { key: 'grant_type', value: 'client_credentials' },",
    "        { key: 'scope', value: pm.variables.get('scope') || '' },",
    "      ] },",
    "    }, (error, reply) => {",
    "      if (error || reply.code !== 200) {",
    "        console.error('token request failed', error || reply.code);",
    "        return;",
    "      }",
    "      const token = reply.json();",
    "      pm.collectionVariables.set('accessToken', token.access_token);",
    "      pm.collectionVariables.set('accessTokenExpires', String(now + 1000 * ((token.expires_in || 300) - 30)));",
    "      sendWithToken(token.access_token);",
    "    });",
    "  }",
    "}",
]
COLLECTION_TESTS = ['pm.test("no server error", () => pm.expect(pm.response.code).to.be.below(500));']


def _script(kind: str, lines: list[str]) -> dict[str, Any]:
    return {"listen": kind, "script": {"type": "text/javascript", "exec": lines}}


def _concrete(path: str) -> str:
    """The path as the server would see it, for matching with the route table."""
    return re.sub(r"\{\{[^}]+\}\}", "x0", path)


def _url(path: str, query: list[tuple[str, str]]) -> dict[str, Any]:
    raw = "{{baseUrl}}" + path
    if query:
        raw += "?" + "&".join(f"{k}={v}" for k, v in query)
    url: dict[str, Any] = {"raw": raw, "host": ["{{baseUrl}}"], "path": [s for s in path.split("/") if s]}
    if query:
        url["query"] = [{"key": k, "value": v} for k, v in query]
    return url


def _item(step: Step) -> dict[str, Any]:
    route, _ = ROUTE_TABLE.match(step.route[0], _concrete(step.path))
    if (route.method, route.pattern) != step.route:
        raise SystemExit(
            f"{step.name!r}: {step.route[0]} {step.path} is routed to {route.pattern}, not {step.route[1]}"
        )
    headers = list(step.headers)
    names = {k.lower() for k, _ in headers}
    body: dict[str, Any] | None = None
    if isinstance(step.body, str):
        body = {"mode": "raw", "raw": step.body}
    elif isinstance(step.body, list):
        body = {"mode": "urlencoded", "urlencoded": [{"key": k, "value": v, "type": "text"} for k, v in step.body]}
        if "content-type" not in names:
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    elif step.body is not None:
        body = {"mode": "raw", "raw": json.dumps(step.body, indent=2), "options": {"raw": {"language": "json"}}}
        if "content-type" not in names:
            headers.append(("Content-Type", FHIR_JSON))
    if "accept" not in {k.lower() for k, _ in headers}:
        headers.append(("Accept", FHIR_JSON))
    request: dict[str, Any] = {
        "method": step.route[0],
        "header": [{"key": k, "value": v} for k, v in headers],
        "url": _url(step.path, step.query),
        "description": f"Route `{route.method} {route.pattern}` ({route.service}: {route.interaction}).",
    }
    if body is not None:
        request["body"] = body
    events = [_script("test", step.tests)]
    if step.prerequest:
        events.insert(0, _script("prerequest", step.prerequest))
    return {"name": step.name, "event": events, "request": request}


def _generic(method: str, pattern: str) -> Step:
    path = pattern.replace("{type}", "Patient").replace("{id}", P).replace("{compartment_type}", "Observation")
    path = re.sub(r"\{(\w+)\}", r"{{\1}}", path)
    return Step((method, pattern), f"{method} {pattern}", path, tests=COLLECTION_TESTS)


def table_routes() -> list[tuple[str, str]]:
    """The routes the collection covers: the table's, without the tenant-prefixed copies."""
    return [(r.method, r.pattern) for r in ROUTES if not r.pattern.startswith(TENANT_PREFIX)]


def build_collection() -> dict[str, Any]:
    known = set(table_routes())
    folders: list[dict[str, Any]] = []
    covered: set[tuple[str, str]] = set()
    names: set[str] = set()
    for title, steps in FOLDERS:
        items = []
        for step in steps():
            if step.route not in known:
                raise SystemExit(f"{step.name!r} names {step.route}, which is not in fhirflow.routes")
            if step.name in names:
                raise SystemExit(f"two requests are named {step.name!r} (setNextRequest goes by name)")
            names.add(step.name)
            covered.add(step.route)
            items.append(_item(step))
        folders.append({"name": title, "item": items})
    missing = [route for route in table_routes() if route not in covered]
    if missing:
        folders.append(
            {
                "name": "Other routes",
                "description": "Routes of the table with no scripted step yet: answered without a 5xx.",
                "item": [_item(_generic(*route)) for route in missing],
            }
        )
    variables = [
        "runTag",
        "patientId",
        "observationId",
        "groupId",
        "binaryId",
        "subscriptionId",
        "subscribedObservationId",
    ]
    variables += ["asyncJob", "exportJob", "exportFile", "reindexJob", "accessToken", "accessTokenExpires"]
    return {
        "info": {
            "_postman_id": "0b6d6c1e-6a9e-4c84-9a6e-f1c0f10f1000",
            "name": "fhirflow",
            "description": (
                "Every route of fhirflow's route table (fhirflow/routes.py), as a scenario with tests: capabilities, "
                "CRUD and operations, search, history, batch and transaction (and async), bulk export with polling, "
                "reindex, Binary, subscriptions, cleanup. Generated by tools/gen_postman.py: do not edit by hand. "
                "Pick the local or the AWS environment; with tokenUrl set, a client-credentials token is fetched "
                "with the environment's scope."
            ),
            "schema": SCHEMA,
        },
        "event": [_script("prerequest", AUTH_PREREQUEST), _script("test", COLLECTION_TESTS)],
        "variable": [{"key": v, "value": ""} for v in variables],
        "item": folders,
    }


def _environment(env_id: str, name: str, values: dict[str, tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": env_id,
        "name": name,
        "values": [
            {"key": key, "value": value, "type": kind, "enabled": True} for key, (value, kind) in sorted(values.items())
        ],
        "_postman_variable_scope": "environment",
    }


SMART_SCOPES = "system/*.cruds"
"""SMART v2 system scopes the AWS run needs (every interaction on every type); narrower ones work for
the folders they allow (system/Patient.rs system/Observation.rs for search, for example)."""


def build_environments() -> dict[str, dict[str, Any]]:
    local = _environment(
        "0b6d6c1e-6a9e-4c84-9a6e-f1c0f10f1001",
        "fhirflow local",
        {
            "baseUrl": ("http://127.0.0.1:8080", "default"),
            # A rest-hook endpoint: any https URL is accepted (delivery to it is the server's business);
            # a local receiver over http needs FHIRFLOW_SUBSCRIPTIONS_ALLOW_HTTP/_PRIVATE on the server.
            "subscriptionEndpoint": ("https://example.org/fhirflow-hook", "default"),
            "tokenUrl": ("", "default"),
        },
    )
    aws = _environment(
        "0b6d6c1e-6a9e-4c84-9a6e-f1c0f10f1002",
        "fhirflow AWS",
        {
            "baseUrl": ("https://API_ID.execute-api.REGION.amazonaws.com/prod", "default"),
            "subscriptionEndpoint": ("https://example.org/fhirflow-hook", "default"),
            "tokenUrl": ("https://YOUR_IDP/oauth2/token", "default"),
            "clientId": ("", "default"),
            "clientSecret": ("", "secret"),
            "scope": (SMART_SCOPES, "default"),
        },
    )
    return {LOCAL_ENV: local, AWS_ENV: aws}


def rendered() -> dict[str, str]:
    """File name → the exact text to commit."""
    files = {COLLECTION: build_collection(), **build_environments()}
    return {name: json.dumps(content, indent=2, ensure_ascii=False) + "\n" for name, content in files.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files differ, write nothing")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where to write (default: postman/)")
    args = parser.parse_args()
    stale = []
    for name, text in rendered().items():
        target = args.out / name
        if args.check:
            if not target.exists() or target.read_text("utf-8") != text:
                stale.append(name)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, "utf-8")
    if stale:
        print(f"out of date with the route table: {', '.join(stale)}; run python tools/gen_postman.py")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
