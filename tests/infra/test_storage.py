"""The tables are the adapter's schema (fhirflow.adapters.aws.schema), protected; the buckets are private."""

from __future__ import annotations

from typing import Any

from fhirflow.adapters.aws import schema
from tests.infra.conftest import Synthesized


def _table(synthesized: Synthesized, construct: Any) -> dict[str, Any]:
    props: dict[str, Any] = synthesized.template["Resources"][synthesized.logical_id(construct)]["Properties"]
    return props


def _by_name(items: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {item[key]: item for item in items}


def test_the_resource_table_is_the_adapters_schema(synthesized: Synthesized) -> None:
    declared = schema.resource_table("ignored")
    table = _table(synthesized, synthesized.stack.tables.table)
    assert table["KeySchema"] == declared["KeySchema"]
    assert _by_name(table["AttributeDefinitions"], "AttributeName") == _by_name(
        declared["AttributeDefinitions"], "AttributeName"
    )
    assert _by_name(table["GlobalSecondaryIndexes"], "IndexName") == _by_name(
        declared["GlobalSecondaryIndexes"], "IndexName"
    )
    assert table["StreamSpecification"] == {"StreamViewType": declared["StreamSpecification"]["StreamViewType"]}
    assert table["BillingMode"] == declared["BillingMode"] == "PAY_PER_REQUEST"


def test_the_ledger_is_the_adapters_schema_with_its_ttl(synthesized: Synthesized) -> None:
    declared = schema.ledger_table("ignored")
    ledger = _table(synthesized, synthesized.stack.tables.ledger)
    assert ledger["KeySchema"] == declared["KeySchema"]
    assert ledger["AttributeDefinitions"] == declared["AttributeDefinitions"]
    assert ledger["TimeToLiveSpecification"] == {"AttributeName": schema.LEDGER_TTL, "Enabled": True}
    assert "StreamSpecification" not in ledger


def test_tables_are_encrypted_recoverable_and_protected(synthesized: Synthesized) -> None:
    from aws_cdk.assertions import Match

    key = synthesized.logical_id(synthesized.stack.data_key)
    synthesized.assertions.all_resources_properties(
        "AWS::DynamoDB::Table",
        {
            "BillingMode": "PAY_PER_REQUEST",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": Match.object_like({"SSEEnabled": True, "SSEType": "KMS"}),
            "DeletionProtectionEnabled": True,
        },
    )
    tables = synthesized.resources("AWS::DynamoDB::Table")
    assert len(tables) == 3  # resources, ledger, subscriptions' state
    for name, table in tables.items():
        props = table["Properties"]
        assert props["SSESpecification"] == {
            "KMSMasterKeyId": {"Fn::GetAtt": [key, "Arn"]},
            "SSEEnabled": True,
            "SSEType": "KMS",
        }, name
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, name
        assert props["DeletionProtectionEnabled"] is True, name
        assert table["DeletionPolicy"] == "Retain", name


def test_the_resource_table_is_in_a_backup_plan(synthesized: Synthesized) -> None:
    selections = synthesized.resources("AWS::Backup::BackupSelection").values()
    resources = str([s["Properties"]["BackupSelection"]["Resources"] for s in selections])
    assert synthesized.logical_id(synthesized.stack.tables.table) in resources
    _, vault = synthesized.only("AWS::Backup::BackupVault")
    assert vault["Properties"]["EncryptionKeyArn"] == {
        "Fn::GetAtt": [synthesized.logical_id(synthesized.stack.data_key), "Arn"]
    }


def test_the_data_key_rotates(synthesized: Synthesized) -> None:
    _, key = synthesized.only("AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"


def test_buckets_are_private_versioned_encrypted_and_tls_only(synthesized: Synthesized) -> None:
    buckets = synthesized.stack.buckets
    key = synthesized.logical_id(synthesized.stack.data_key)
    logs = synthesized.logical_id(buckets.access_logs)
    policies = {
        p["Properties"]["Bucket"]["Ref"]: p["Properties"]["PolicyDocument"]["Statement"]
        for p in synthesized.resources("AWS::S3::BucketPolicy").values()
    }
    all_buckets = synthesized.resources("AWS::S3::Bucket")
    archive = synthesized.stack.audit_archive
    assert archive is not None
    assert len(all_buckets) == 4  # and the audit archive's (tests/infra/test_observability.py)
    for bucket in (buckets.blobs, buckets.exports, buckets.access_logs, archive.bucket):
        name = synthesized.logical_id(bucket)
        props = all_buckets[name]["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, name
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}, name
        denies_plain_http = [
            s
            for s in policies[name]
            if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        ]
        assert denies_plain_http, name
        encryption = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
        if name == logs:
            assert encryption == {"SSEAlgorithm": "AES256"}  # the only encryption S3 log delivery accepts
        else:
            assert encryption == {"KMSMasterKeyID": {"Fn::GetAtt": [key, "Arn"]}, "SSEAlgorithm": "aws:kms"}, name
            assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs}, name


STATEFUL = {
    "AWS::KMS::Key": {"DataKey2A0DE9E6"},
    "AWS::DynamoDB::Table": {"TablesResourcesF2CE5B22", "TablesLedgerF9806C8B", "SubscriptionsState75F3E325"},
    "AWS::Backup::BackupVault": {"TablesBackupsVaultF7A4E24B"},
    "AWS::S3::Bucket": {
        "BucketsAccessLogsA5F88218",
        "BucketsBlobsF94FAD01",
        "BucketsExportsEFF3E371",
        "AuditArchiveRecords68DA5556",
    },
}


def test_stateful_resources_keep_their_logical_ids(synthesized: Synthesized) -> None:
    """Renaming or moving one of these constructs makes CloudFormation create a new, empty resource
    beside the retained one, and the Lambdas switch to it: change these only with a migration."""
    for type_, logical_ids in STATEFUL.items():
        assert set(synthesized.resources(type_)) == logical_ids, type_
