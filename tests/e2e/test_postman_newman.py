"""The Postman collection (postman/, generated from the route table by tools/gen_postman.py), run
by newman (npm) against the embedded server as a user runs it (issue 15, point 7): with the local
environment, and with the AWS environment's OAuth 2 client-credentials token against a server with
SMART on. Every assertion of every request must pass, and every request must run."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.test_authz_as import AuthorizationServer, Realm
from tests.e2e.webhooks import Receiver

ROOT = Path(__file__).resolve().parents[2]
NEWMAN = ROOT / "node_modules" / ".bin" / "newman"
COLLECTION = ROOT / "postman" / "fhirflow.postman_collection.json"
LOCAL_ENV = ROOT / "postman" / "fhirflow-local.postman_environment.json"
AWS_ENV = ROOT / "postman" / "fhirflow-aws.postman_environment.json"
# The subscription's endpoint is a receiver on 127.0.0.1 over http, which the server refuses by default.
SUBSCRIPTIONS_ENV = {"FHIRFLOW_SUBSCRIPTIONS_ALLOW_HTTP": "true", "FHIRFLOW_SUBSCRIPTIONS_ALLOW_PRIVATE": "true"}
CLIENT = ("newman-client", "newman-secret")


def _newman(environment: Path, overrides: dict[str, str], report: Path) -> dict[str, Any]:
    if not NEWMAN.exists():
        pytest.skip("newman is not installed (make setup installs it with npm ci)")
    node = shutil.which("node")
    assert node is not None
    command = [node, str(NEWMAN.resolve()), "run", str(COLLECTION), "--environment", str(environment)]
    for key, value in overrides.items():
        command += ["--env-var", f"{key}={value}"]
    command += ["--reporters", "cli,json", "--reporter-json-export", str(report)]
    command += ["--timeout-request", "60000", "--disable-unicode", "--color", "off"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert report.exists(), f"newman wrote no report: {finished.stderr[-3000:]}{finished.stdout[-3000:]}"
    run: dict[str, Any] = json.loads(report.read_text())["run"]
    failures = [f"{f['source']['name']}: {f['error'].get('test', '')} {f['error']['message']}" for f in run["failures"]]
    assert failures == [], finished.stdout[-6000:]
    assert finished.returncode == 0, finished.stdout[-6000:]
    assert run["stats"]["assertions"]["failed"] == 0
    assert run["stats"]["assertions"]["total"] > 100
    # Every request of the collection ran (a setNextRequest loop may add runs, never skip one).
    collection = json.loads(COLLECTION.read_text())
    names = {item["name"] for folder in collection["item"] for item in folder["item"]}
    assert names == {execution["item"]["name"] for execution in run["executions"]}
    return run


@pytest.fixture(scope="module")
def newman_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with LocalServer(data_dir=tmp_path_factory.mktemp("newman"), env=SUBSCRIPTIONS_ENV, workers=2) as running:
        yield running


def test_newman_runs_the_collection_green(newman_server: LocalServer, tmp_path: Path) -> None:
    with Receiver() as receiver:
        _newman(
            LOCAL_ENV,
            {"baseUrl": newman_server.base_url, "subscriptionEndpoint": receiver.url},
            tmp_path / "newman.json",
        )


class ClientSecretTokenEndpoint:
    """An OAuth 2 token endpoint for confidential clients (RFC 6749 §4.4, client_secret_basic):
    the AWS environment's grant, with the access token signed by ``realm`` (whose JWKS the FHIR
    server trusts). It counts the tokens it issues."""

    def __init__(self, realm: Realm) -> None:
        self.realm = realm
        self.issued: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                basic = "Basic " + base64.b64encode(":".join(CLIENT).encode()).decode()
                if self.headers.get("Authorization") != basic:
                    status, answer = 401, {"error": "invalid_client"}
                elif form.get("grant_type") != "client_credentials" or not form.get("scope"):
                    status, answer = 400, {"error": "invalid_request"}
                else:
                    token = endpoint.realm.mint(form["scope"], sub=CLIENT[0], client_id=CLIENT[0])
                    endpoint.issued.append(form["scope"])
                    status, answer = 200, {"access_token": token, "token_type": "bearer", "expires_in": 300}
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> ClientSecretTokenEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_newman_with_the_aws_environment_gets_a_client_credentials_token(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    with AuthorizationServer() as idp:
        realm = idp.realm("aws")
        env = {**SUBSCRIPTIONS_ENV, "FHIRFLOW_AUTH_CONFIG": json.dumps({"issuers": [idp.issuer_config("aws")]})}
        with (
            ClientSecretTokenEndpoint(realm) as tokens,
            Receiver() as receiver,
            LocalServer(
                data_dir=tmp_path_factory.mktemp("newman-smart"), extra_args=("--auth", "smart"), env=env
            ) as server,
        ):
            overrides = {
                "baseUrl": server.base_url,
                "subscriptionEndpoint": receiver.url,
                "tokenUrl": tokens.url,
                "clientId": CLIENT[0],
                "clientSecret": CLIENT[1],
            }
            _newman(AWS_ENV, overrides, tmp_path / "newman.json")

    # One token for the whole run (reused until shortly before it expires), with the environment's scope.
    aws_scope = next(v["value"] for v in json.loads(AWS_ENV.read_text())["values"] if v["key"] == "scope")
    assert tokens.issued == [aws_scope]
