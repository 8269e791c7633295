"""The template's resources, stood up locally, and its intrinsic functions resolved against them.

Physical names are chosen here as CloudFormation would choose them (the template's name where it
gives one, else one derived from the logical id); ``Ref`` and ``Fn::GetAtt`` then resolve to the
names and ARNs of the local resources, in account 123456789012 and us-east-1 (moto's), except
what DynamoDB Local names itself (stream ARNs).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
PSEUDO = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": PARTITION,
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "fhirflow",
    "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/fhirflow/1",
    "AWS::NoValue": None,
}
_DYNAMIC = re.compile(r"\{\{resolve:secretsmanager:([^:}]+(?::[^:}]+)*?):SecretString:([^:}]*):([^:}]*):([^:}]*)\}\}")


def _name(logical_id: str, limit: int = 63) -> str:
    return f"fhirflow-{logical_id}".lower()[:limit]


@dataclass
class Cloud:
    """The template's resources and what their ``Ref``/``Fn::GetAtt`` resolve to."""

    template: dict[str, Any]
    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    """Secret ARN → its value (what a dynamic reference resolves to)."""

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.template["Resources"]
        return resources

    def of_type(self, type_: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == type_}

    # -- names ------------------------------------------------------------------------------------

    def name(self) -> None:
        """Choose the physical name and ARNs of every resource whose names do not depend on
        creating it (the rest are filled in by :mod:`tests.support.stack.provision`)."""
        for logical_id, resource in self.resources.items():
            kind, props = resource["Type"], resource.get("Properties", {})
            arn = f"arn:{PARTITION}"
            if kind == "AWS::DynamoDB::Table":
                table = props.get("TableName") or _name(logical_id)
                self._set(logical_id, table, Arn=f"{arn}:dynamodb:{REGION}:{ACCOUNT}:table/{table}")
            elif kind == "AWS::S3::Bucket":
                bucket = props.get("BucketName") or _name(logical_id)
                self._set(logical_id, bucket, Arn=f"{arn}:s3:::{bucket}", DomainName=f"{bucket}.s3.amazonaws.com")
            elif kind == "AWS::SQS::Queue":
                queue = props.get("QueueName") or _name(logical_id, 75) + (".fifo" if props.get("FifoQueue") else "")
                self._set(logical_id, "", Arn=f"{arn}:sqs:{REGION}:{ACCOUNT}:{queue}", QueueName=queue)
            elif kind == "AWS::Events::EventBus":
                bus = props["Name"]
                self._set(logical_id, bus, Arn=f"{arn}:events:{REGION}:{ACCOUNT}:event-bus/{bus}", Name=bus)
            elif kind == "AWS::StepFunctions::StateMachine":
                machine = props.get("StateMachineName") or _name(logical_id, 80)
                machine_arn = f"{arn}:states:{REGION}:{ACCOUNT}:stateMachine:{machine}"
                self._set(logical_id, machine_arn, Arn=machine_arn, Name=machine)
            elif kind == "AWS::KMS::Key":
                key_id = f"{logical_id.lower():0<32}"[:32]
                self._set(logical_id, key_id, Arn=f"{arn}:kms:{REGION}:{ACCOUNT}:key/{key_id}", KeyId=key_id)
            elif kind == "AWS::OpenSearchService::Domain":
                domain = props.get("DomainName") or _name(logical_id, 28)
                domain_arn = f"{arn}:es:{REGION}:{ACCOUNT}:domain/{domain}"
                endpoint = f"search-{domain}.{REGION}.es.amazonaws.com"
                self._set(logical_id, domain, Arn=domain_arn, DomainArn=domain_arn, DomainEndpoint=endpoint)
            elif kind == "AWS::IAM::Role":
                role = props.get("RoleName") or _name(logical_id)
                self._set(logical_id, role, Arn=f"{arn}:iam::{ACCOUNT}:role/{role}")
            elif kind == "AWS::Lambda::Function":
                function = props.get("FunctionName") or _name(logical_id)
                self._set(logical_id, function, Arn=f"{arn}:lambda:{REGION}:{ACCOUNT}:function:{function}")
            elif kind == "AWS::Logs::LogGroup":
                group = props.get("LogGroupName") or f"/aws/lambda/{_name(logical_id)}"
                self._set(logical_id, group, Arn=f"{arn}:logs:{REGION}:{ACCOUNT}:log-group:{group}:*")
            elif kind == "AWS::SNS::Topic":
                topic = props.get("TopicName") or _name(logical_id)
                topic_arn = f"{arn}:sns:{REGION}:{ACCOUNT}:{topic}"
                self._set(logical_id, topic_arn, TopicArn=topic_arn, TopicName=topic)
            elif kind == "AWS::SecretsManager::Secret":
                self._set(logical_id, "")  # moto names it when it is created
            else:
                self.refs.setdefault(logical_id, logical_id)

    def _set(self, logical_id: str, ref: str, **attributes: str) -> None:
        self.refs[logical_id] = ref
        for attribute, value in attributes.items():
            self.attributes[(logical_id, attribute)] = value

    # -- intrinsic functions ----------------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if isinstance(value, str):
            return _DYNAMIC.sub(self._dynamic, value)
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return PSEUDO[argument] if argument in PSEUDO else self._ref(argument)
            if key == "Fn::GetAtt":
                logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self._attribute(logical_id, attribute)
            if key == "Fn::Join":
                separator, parts = argument
                return separator.join(str(p) for p in self.resolve(parts))
            if key == "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                separator, text = argument
                return str(self.resolve(text)).split(separator)
            if key == "Fn::Sub":
                return self._sub(argument)
            if key.startswith("Fn::"):
                raise NotImplementedError(f"intrinsic function {key}")
        return {k: self.resolve(v) for k, v in value.items()}

    def _ref(self, logical_id: str) -> str:
        ref = self.refs.get(logical_id)
        if ref is None or ref == "":
            raise KeyError(f"Ref {logical_id}: not stood up (type {self.resources[logical_id]['Type']})")
        return ref

    def _attribute(self, logical_id: str, attribute: str) -> str:
        found = self.attributes.get((logical_id, attribute))
        if found is None:
            kind = self.resources[logical_id]["Type"]
            raise KeyError(f"Fn::GetAtt {logical_id}.{attribute} ({kind}) is not modelled")
        return found

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {k: self.resolve(v) for k, v in variables.items()}

        def one(match: re.Match[str]) -> str:
            name = match[1]
            if name in values:
                return str(values[name])
            if name in PSEUDO:
                return str(PSEUDO[name])
            if "." in name:
                return self._attribute(*name.split(".", 1))
            return self._ref(name)

        return re.sub(r"\$\{([^!}][^}]*)\}", one, text)

    def _dynamic(self, match: re.Match[str]) -> str:
        """``{{resolve:secretsmanager:...}}``, as CloudFormation resolves it at deploy time."""
        secret_id, json_key = match[1], match[2]
        value = next((v for arn, v in self.secrets.items() if secret_id in (arn, arn.rsplit(":", 1)[-1])), None)
        if value is None:
            raise KeyError(f"dynamic reference to an unknown secret {secret_id}")
        return str(json.loads(value)[json_key]) if json_key else value
