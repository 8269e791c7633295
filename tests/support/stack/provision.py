"""Stand the template's resources up locally and run its functions in processes of their own.

DynamoDB tables go to DynamoDB Local; buckets, queues, buses and rules, state machines and
secrets to moto's server (one per test session, on 127.0.0.1, so every function process sees
the same ones); the OpenSearch domain is the shared stand-in. A function's process gets the
environment the template gives it, resolved, plus only what points the SDK at these local
endpoints (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_DYNAMODB``) and the IdP's keys at a local
JWKS: nothing else of the test leaks into it.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.stack.cloud import REGION, Cloud, _name
from tests.support.stack.iam import Needs, Statement, allowed, resource_policy_allows, role_statements

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
_TABLE_KEYS = (
    "AttributeDefinitions",
    "KeySchema",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "StreamSpecification",
)


def stand_up(cloud: Cloud, *, moto: Any, dynamodb: Any) -> None:
    """Create every resource the functions touch; ``moto`` and ``dynamodb`` make boto3 clients."""
    cloud.name()
    for logical_id, resource in cloud.of_type("AWS::SecretsManager::Secret").items():
        props = resource["Properties"]
        generated = props.get("GenerateSecretString", {})
        length = int(generated.get("PasswordLength", 32))
        alphabet = string.ascii_letters + string.digits
        value = props.get("SecretString") or "".join(secrets.choice(alphabet) for _ in range(length))
        arn = moto("secretsmanager").create_secret(Name=_name(logical_id), SecretString=value)["ARN"]
        cloud.refs[logical_id] = arn
        cloud.secrets[arn] = value
    for logical_id, resource in cloud.of_type("AWS::DynamoDB::Table").items():
        props = cloud.resolve({k: v for k, v in resource["Properties"].items() if k in _TABLE_KEYS})
        for index in props.get("GlobalSecondaryIndexes", []):
            index.pop("ContributorInsightsSpecification", None)
        if "StreamSpecification" in props:
            props["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
        table = cloud.refs[logical_id]
        client = dynamodb("dynamodb")
        client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **props)
        stream = client.describe_table(TableName=table)["Table"].get("LatestStreamArn")
        if stream:
            cloud.attributes[(logical_id, "StreamArn")] = stream
    for logical_id, resource in cloud.of_type("AWS::S3::Bucket").items():
        moto("s3").create_bucket(Bucket=cloud.refs[logical_id])
        if resource["Properties"].get("VersioningConfiguration", {}).get("Status") == "Enabled":
            moto("s3").put_bucket_versioning(
                Bucket=cloud.refs[logical_id], VersioningConfiguration={"Status": "Enabled"}
            )
    for logical_id, resource in cloud.of_type("AWS::SQS::Queue").items():
        attributes = {"FifoQueue": "true"} if resource["Properties"].get("FifoQueue") else {}
        name = cloud.attributes[(logical_id, "QueueName")]
        cloud.refs[logical_id] = moto("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    for logical_id in cloud.of_type("AWS::Events::EventBus"):
        moto("events").create_event_bus(Name=cloud.refs[logical_id])
    for logical_id, resource in cloud.of_type("AWS::StepFunctions::StateMachine").items():
        props = resource["Properties"]
        definition = cloud.resolve(props.get("DefinitionString"))
        for name, value in cloud.resolve(props.get("DefinitionSubstitutions", {})).items():
            definition = definition.replace("${" + name + "}", str(value))
        moto("stepfunctions").create_state_machine(
            name=cloud.attributes[(logical_id, "Name")],
            definition=definition,
            roleArn=cloud.resolve(props["RoleArn"]),
            type=props.get("StateMachineType", "STANDARD"),
        )


@dataclass
class Violation:
    function: str
    action: str
    resource: str
    why: str

    def __str__(self) -> str:
        return f"{self.function}: {self.action} on {self.resource} ({self.why})"


@dataclass
class FunctionProcess:
    """One function's execution environment (see lambda_process)."""

    logical_id: str
    handler: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _reply: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    """One invocation at a time: an execution environment serves one request at once (a Map
    state's concurrent tasks wait their turn here instead of starting more environments)."""

    def start(self) -> None:
        read_end, write_end = os.pipe()
        env = {**self.env, "STACK_REPLY_FD": str(write_end)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.stack.lambda_process", self.handler],
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                pass_fds=(write_end,),
                cwd=Path(__file__).resolve().parents[3],
            )
        os.close(write_end)
        self._reply = os.fdopen(read_end, "r")

    def invoke(self, event: Any) -> dict[str, Any]:
        with self._lock:
            return self._invoke(event)

    def _invoke(self, event: Any) -> dict[str, Any]:
        if self.process is None:
            self.start()
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"event": event}) + "\n").encode())
        self.process.stdin.flush()
        line = self._reply.readline()
        if not line:
            log = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.logical_id} died: {log}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        if self.process is not None:
            if self.process.stdin:
                self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class ExecutedStack:
    cloud: Cloud
    base_env: dict[str, str]
    """What every function process gets besides its own environment (local endpoints)."""
    logs: Path
    overrides: dict[str, str] = field(default_factory=dict)
    """Environment variables replaced in every function (the IdP's JWKS URI)."""
    processes: dict[str, FunctionProcess] = field(default_factory=dict)
    workflow_failures: list[str] = field(default_factory=list)
    """Executions of the state machines that failed (error and cause)."""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(function logical id, call) of every call any function made."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def functions(self) -> dict[str, dict[str, Any]]:
        return self.cloud.of_type("AWS::Lambda::Function")

    def function_id(self, handler: str) -> str:
        found = [k for k, v in self.functions().items() if v["Properties"]["Handler"] == handler]
        assert len(found) == 1, f"{len(found)} functions with handler {handler}"
        return found[0]

    def environment(self, logical_id: str) -> dict[str, str]:
        props = self.functions()[logical_id]["Properties"]
        variables = self.cloud.resolve(props.get("Environment", {}).get("Variables", {}))
        env = {k: str(v) for k, v in variables.items()}
        env.update({k: v for k, v in self.overrides.items() if k in env})
        name = self.cloud.refs[logical_id]
        lambda_env = {
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "LAMBDA_TASK_ROOT": "/var/task",
            "STACK_TIMEOUT_MS": str(int(props.get("Timeout", 3)) * 1000),
        }
        return {**self.base_env, **lambda_env, **env}

    def invoke(self, logical_id: str, event: Any) -> dict[str, Any]:
        with self._lock:
            process = self.processes.get(logical_id)
            if process is None:
                handler = self.functions()[logical_id]["Properties"]["Handler"]
                log = self.logs / f"{logical_id}.log"
                process = self.processes[logical_id] = FunctionProcess(
                    logical_id, handler, self.environment(logical_id), log
                )
        answer = process.invoke(event)
        with self._lock:
            self.calls += [(logical_id, call) for call in answer["calls"]]
        return answer

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()

    # -- the check -----------------------------------------------------------------------------

    def role_of(self, logical_id: str) -> str:
        role = self.functions()[logical_id]["Properties"]["Role"]
        return str(role["Fn::GetAtt"][0])

    def domain(self) -> tuple[str | None, dict[str, Any]]:
        domains = self.cloud.of_type("AWS::OpenSearchService::Domain")
        if not domains:
            return None, {}
        ((logical_id, resource),) = domains.items()
        policy = self.cloud.resolve(resource["Properties"].get("AccessPolicies", {}))
        return self.cloud.attributes[(logical_id, "DomainArn")], policy

    def violations(self) -> list[Violation]:
        domain_arn, domain_policy = self.domain()
        needs = Needs(self.cloud, domain_arn)
        policies: dict[str, list[Statement]] = {}
        found: list[Violation] = []
        for logical_id, call in self.calls:
            role_id = self.role_of(logical_id)
            policy = policies.setdefault(role_id, role_statements(self.cloud, role_id))
            role_arn = self.cloud.attributes[(role_id, "Arn")]
            for action, resource in needs.of(call):
                if not allowed(policy, action, resource):
                    found.append(Violation(logical_id, action, resource, "not allowed by the role's policies"))
                elif action.startswith("es:") and not resource_policy_allows(domain_policy, role_arn, action, resource):
                    found.append(Violation(logical_id, action, resource, "not allowed by the domain's access policy"))
        return list({str(v): v for v in found}.values())


@contextmanager
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
