"""What a role may do, read from the template, and what each recorded call needs.

IAM's evaluation, reduced to what the stack uses: a request is allowed when an ``Allow``
statement of the role's policies matches its action and resource (``*`` and ``?`` wildcards,
actions case-insensitive) and no ``Deny`` does. Conditions are not evaluated (a statement with
one counts as matching; :func:`conditions_seen` lists them for the test to report).

Each call is turned into the (action, resource) pairs IAM checks for it: S3's object and bucket
actions (``HeadObject`` is ``s3:GetObject``), DynamoDB's per-item actions inside a transaction,
the index ARN of a ``Query`` on an index, the KMS key of an encrypted bucket, queue or secret
(``kms:GenerateDataKey`` to write, ``kms:Decrypt`` to read), and ``es:ESHttp<Method>`` on the
domain path of an OpenSearch request.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from tests.support.stack.cloud import ACCOUNT, PARTITION, REGION, Cloud

Need = tuple[str, str]
"""(action, resource ARN)"""


@dataclass(frozen=True)
class Statement:
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: bool

    def matches(self, action: str, resource: str) -> bool:
        return any(_match(action.lower(), a.lower()) for a in self.actions) and any(
            _match(resource, r) for r in self.resources
        )


def _match(value: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _tuple(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)


def statements(document: dict[str, Any]) -> list[Statement]:
    found = document.get("Statement", [])
    return [
        Statement(s["Effect"], _tuple(s.get("Action", [])), _tuple(s.get("Resource", "*")), "Condition" in s)
        for s in (found if isinstance(found, list) else [found])
    ]


def role_statements(cloud: Cloud, role_id: str) -> list[Statement]:
    """Every statement of the role's inline policies and the policies attached to it."""
    found: list[Statement] = []
    role = cloud.resources[role_id]
    for policy in role.get("Properties", {}).get("Policies", []):
        found += statements(cloud.resolve(policy["PolicyDocument"]))
    for resource in cloud.resources.values():
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            props = resource["Properties"]
            if {"Ref": role_id} in props.get("Roles", []):
                found += statements(cloud.resolve(props["PolicyDocument"]))
    return found


def allowed(policy: list[Statement], action: str, resource: str) -> bool:
    if any(s.effect == "Deny" and s.matches(action, resource) for s in policy):
        return False
    return any(s.effect == "Allow" and s.matches(action, resource) for s in policy)


def resource_policy_allows(document: dict[str, Any], principal: str, action: str, resource: str) -> bool:
    """A resource policy (the OpenSearch domain's access policy) for one principal ARN."""
    for statement in document.get("Statement", []):
        principals = statement.get("Principal", {})
        aws = principals.get("AWS", []) if isinstance(principals, dict) else principals
        if principal not in _tuple(aws) and "*" not in _tuple(aws):
            continue
        rule = Statement(statement["Effect"], _tuple(statement["Action"]), _tuple(statement["Resource"]), False)
        if rule.effect == "Allow" and rule.matches(action, resource):
            return True
    return False


# -- what a call needs ------------------------------------------------------------------------


@dataclass
class Needs:
    cloud: Cloud
    domain_arn: str | None = None

    def of(self, call: dict[str, Any]) -> list[Need]:
        if call["kind"] == "opensearch":
            assert self.domain_arn, "an OpenSearch call, and no domain in the template"
            return [(f"es:ESHttp{call['method'].title()}", f"{self.domain_arn}{call['path']}")]
        prefix, operation, params = call["prefix"], call["operation"], call["params"]
        method = getattr(self, f"_{call['service'].replace('-', '_')}", None)
        if method is None:
            raise NotImplementedError(f"no IAM model for {call['service']}:{operation}")
        needs: list[Need] = method(operation, params, prefix)
        return needs

    # DynamoDB and its streams
    def _table_arn(self, table: str) -> str:
        if table.startswith("arn:"):
            return table
        return f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{table}"

    def _dynamodb(self, operation: str, params: dict[str, Any], prefix: str) -> list[Need]:
        if operation == "TransactWriteItems":
            kinds = {
                "Put": "PutItem",
                "Update": "UpdateItem",
                "Delete": "DeleteItem",
                "ConditionCheck": "ConditionCheckItem",
            }
            return [
                (f"dynamodb:{kinds[kind]}", self._table_arn(body["TableName"]))
                for item in params["TransactItems"]
                for kind, body in item.items()
            ]
        if operation == "TransactGetItems":
            return [("dynamodb:GetItem", self._table_arn(i["Get"]["TableName"])) for i in params["TransactItems"]]
        if operation in ("BatchWriteItem", "BatchGetItem"):
            return [(f"dynamodb:{operation}", self._table_arn(t)) for t in params["RequestItems"]]
        table = self._table_arn(params["TableName"])
        if params.get("IndexName"):
            table = f"{table}/index/{params['IndexName']}"
        return [(f"dynamodb:{operation}", table)]

    def _dynamodbstreams(self, operation: str, params: dict[str, Any], prefix: str) -> list[Need]:
        if operation == "ListStreams":
            return [("dynamodb:ListStreams", "*")]
        arn = params.get("StreamArn") or _stream_of_iterator(params.get("ShardIterator", ""))
        return [(f"dynamodb:{operation}", arn)]

    # S3 (object actions are named for what they do, not for the API call)
    _S3_OBJECT = {
        "GetObject": "s3:GetObject",
        "HeadObject": "s3:GetObject",
        "PutObject": "s3:PutObject",
        "CreateMultipartUpload": "s3:PutObject",
        "UploadPart": "s3:PutObject",
        "CompleteMultipartUpload": "s3:PutObject",
        "AbortMultipartUpload": "s3:AbortMultipartUpload",
        "DeleteObject": "s3:DeleteObject",
        "GetObjectTagging": "s3:GetObjectTagging",
        "PutObjectTagging": "s3:PutObjectTagging",
    }
    _S3_BUCKET = {"ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket", "HeadBucket": "s3:ListBucket"}

    def _s3(self, operation: str, params: dict[str, Any], prefix: str) -> list[Need]:
        bucket = params["Bucket"]
        if operation in self._S3_BUCKET:
            return [(self._S3_BUCKET[operation], f"arn:{PARTITION}:s3:::{bucket}")]
        if operation == "DeleteObjects":
            keys = [o["Key"] for o in params["Delete"]["Objects"]]
            return [("s3:DeleteObject", f"arn:{PARTITION}:s3:::{bucket}/{key}") for key in keys]
        if operation == "CopyObject":
            source = params["CopySource"]
            source = source if isinstance(source, str) else f"{source['Bucket']}/{source['Key']}"
            target = f"arn:{PARTITION}:s3:::{bucket}/{params['Key']}"
            needs = [("s3:GetObject", f"arn:{PARTITION}:s3:::{source.lstrip('/')}"), ("s3:PutObject", target)]
            return needs + self._bucket_key(bucket, write=True) + self._bucket_key(source.split("/")[0], write=False)
        action = self._S3_OBJECT.get(operation)
        if action is None:
            raise NotImplementedError(f"no IAM model for s3:{operation}")
        needs = [(action, f"arn:{PARTITION}:s3:::{bucket}/{params['Key']}")]
        if action in ("s3:GetObject", "s3:PutObject"):
            needs += self._bucket_key(bucket, write=action == "s3:PutObject")
        return needs

    def _bucket_key(self, bucket: str, *, write: bool) -> list[Need]:
        for logical_id, resource in self.cloud.of_type("AWS::S3::Bucket").items():
            if self.cloud.refs.get(logical_id) != bucket:
                continue
            rules = resource["Properties"].get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
            for rule in rules:
                key = rule.get("ServerSideEncryptionByDefault", {}).get("KMSMasterKeyID")
                if key:
                    return [("kms:GenerateDataKey" if write else "kms:Decrypt", str(self.cloud.resolve(key)))]
        return []

    # SQS, EventBridge, Step Functions, Secrets Manager
    def _sqs(self, operation: str, params: dict[str, Any], prefix: str) -> list[Need]:
        name = params["QueueUrl"].rstrip("/").rsplit("/", 1)[-1] if "QueueUrl" in params else params["QueueName"]
        arn = f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{name}"
        action = re.sub(r"Batch$", "", operation)
        needs = [(f"sqs:{action}", arn)]
        key = self._queue_key(name)
        if key and action == "SendMessage":
            needs.append(("kms:GenerateDataKey", key))
        if key and action == "ReceiveMessage":
            needs.append(("kms:Decrypt", key))
        return needs

    def _queue_key(self, name: str) -> str | None:
        for logical_id, resource in self.cloud.of_type("AWS::SQS::Queue").items():
            if self.cloud.attributes.get((logical_id, "QueueName")) == name:
                key = resource["Properties"].get("KmsMasterKeyId")
                return str(self.cloud.resolve(key)) if key else None
        return None

    def _events(self, operation: str, params: dict[str, Any], prefix: str) -> list[Need]:
        if operation != "PutEvents":
            raise NotImplementedError(f"no IAM model for events:{operation}")
        needs = []
        for entry in params["Entries"]:
            bus = entry.get("EventBusName", "default")
            arn = bus if bus.startswith("arn:") else f"arn:{PARTITION}:events:{REGION}:{ACCOUNT}:event-bus/{bus}"
            needs.append(("events:PutEvents", arn))
        return needs

    def _stepfunctions(self, operation: str, params: dict[str, Any], prefix: str) -> list[Need]:
        arn = params.get("stateMachineArn") or params.get("executionArn") or "*"
        return [(f"states:{operation}", arn)]

    def _secretsmanager(self, operation: str, params: dict[str, Any], prefix: str) -> list[Need]:
        secret = params["SecretId"]
        arn = next((a for a in self.cloud.secrets if secret in (a, a.rsplit(":", 1)[-1])), secret)
        needs = [(f"secretsmanager:{operation}", arn)]
        for logical_id, resource in self.cloud.of_type("AWS::SecretsManager::Secret").items():
            key = resource["Properties"].get("KmsKeyId")
            if self.cloud.refs.get(logical_id) == arn and key:
                needs.append(("kms:Decrypt", str(self.cloud.resolve(key))))
        return needs

    def _ssm(self, operation: str, params: dict[str, Any], prefix: str) -> list[Need]:
        name = params.get("Name", "")
        return [(f"ssm:{operation}", f"arn:{PARTITION}:ssm:{REGION}:{ACCOUNT}:parameter/{name.lstrip('/')}")]


def _stream_of_iterator(iterator: str) -> str:
    """DynamoDB Local's shard iterators name the stream ARN inside them."""
    found = re.search(r"arn:aws:dynamodb:[^|]+/stream/[^|]+", iterator)
    return found[0] if found else "*"


def conditions_seen(policy: list[Statement]) -> int:
    return sum(1 for s in policy if s.condition)
