"""The executed-stack suite's IAM model (tests/support/stack/iam.py): what it allows and refuses,
so that a green executed-stack run means something."""

from __future__ import annotations

from typing import Any

from tests.support.stack.cloud import Cloud
from tests.support.stack.iam import Needs, allowed, resource_policy_allows, role_statements

TEMPLATE: dict[str, Any] = {
    "Resources": {
        "Table": {"Type": "AWS::DynamoDB::Table", "Properties": {}},
        "Key": {"Type": "AWS::KMS::Key", "Properties": {}},
        "Bucket": {
            "Type": "AWS::S3::Bucket",
            "Properties": {
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [
                        {"ServerSideEncryptionByDefault": {"KMSMasterKeyID": {"Fn::GetAtt": ["Key", "Arn"]}}}
                    ]
                }
            },
        },
        "Role": {"Type": "AWS::IAM::Role", "Properties": {}},
        "Policy": {
            "Type": "AWS::IAM::Policy",
            "Properties": {
                "Roles": [{"Ref": "Role"}],
                "PolicyDocument": {
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": ["dynamodb:GetItem", "dynamodb:Query"],
                            "Resource": [
                                {"Fn::GetAtt": ["Table", "Arn"]},
                                {"Fn::Join": ["", [{"Fn::GetAtt": ["Table", "Arn"]}, "/index/*"]]},
                            ],
                        },
                        {
                            "Effect": "Allow",
                            "Action": "s3:GetObject*",
                            "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": ["Bucket", "Arn"]}, "/*"]]},
                        },
                        {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": {"Fn::GetAtt": ["Key", "Arn"]}},
                        {
                            "Effect": "Deny",
                            "Action": "s3:GetObject",
                            "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": ["Bucket", "Arn"]}, "/secret/*"]]},
                        },
                    ]
                },
            },
        },
    }
}


def cloud() -> Cloud:
    made = Cloud(TEMPLATE)
    made.name()
    return made


def needs(call: dict[str, Any]) -> list[tuple[str, str]]:
    return Needs(cloud()).of(call)


def aws(service: str, operation: str, **params: Any) -> dict[str, Any]:
    return {"kind": "aws", "service": service, "prefix": service, "operation": operation, "params": params}


def test_a_role_may_do_what_its_statements_allow_and_nothing_else() -> None:
    made = cloud()
    policy = role_statements(made, "Role")
    table = made.refs["Table"]
    (get,) = needs(aws("dynamodb", "GetItem", TableName=table))
    assert allowed(policy, *get)
    (put,) = needs(aws("dynamodb", "PutItem", TableName=table))
    assert not allowed(policy, *put)
    (query,) = needs(aws("dynamodb", "Query", TableName=table, IndexName="by-type"))
    assert query[1].endswith("/index/by-type")
    assert allowed(policy, *query)
    transact = needs(aws("dynamodb", "TransactWriteItems", TransactItems=[{"Put": {"TableName": table}}]))
    assert transact == [("dynamodb:PutItem", put[1])]


def test_reading_an_encrypted_object_needs_the_key_too_and_deny_wins() -> None:
    made = cloud()
    policy = role_statements(made, "Role")
    bucket = made.refs["Bucket"]
    read = needs(aws("s3", "HeadObject", Bucket=bucket, Key="a/b"))
    assert [action for action, _ in read] == ["s3:GetObject", "kms:Decrypt"]
    assert all(allowed(policy, *need) for need in read)
    write = needs(aws("s3", "PutObject", Bucket=bucket, Key="a/b"))
    assert [action for action, _ in write] == ["s3:PutObject", "kms:GenerateDataKey"]
    assert not any(allowed(policy, *need) for need in write)
    (secret, _) = needs(aws("s3", "GetObject", Bucket=bucket, Key="secret/x"))
    assert not allowed(policy, *secret)


def test_opensearch_requests_need_the_role_and_the_domain_policy() -> None:
    domain = "arn:aws:es:us-east-1:123456789012:domain/d"
    (need,) = Needs(cloud(), domain).of({"kind": "opensearch", "method": "POST", "path": "/idx/_search"})
    assert need == ("es:ESHttpPost", f"{domain}/idx/_search")
    document = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::1:role/a"},
                "Action": "es:ESHttpPost",
                "Resource": f"{domain}/*",
            }
        ]
    }
    assert resource_policy_allows(document, "arn:aws:iam::1:role/a", *need)
    assert not resource_policy_allows(document, "arn:aws:iam::1:role/b", *need)
