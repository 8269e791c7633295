"""Where fhirflow keeps data: the DynamoDB tables and the S3 buckets.

The tables are built from the CreateTable requests in :mod:`fhirflow.adapters.aws.schema`, the
one definition the adapters, DynamoDB Local and this stack share: no key name is restated here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_backup as backup
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from fhirflow.adapters.aws import schema
from fhirflow_infra.compliance import acknowledge, acknowledge_grant_wildcards, arn_reference
from fhirflow_infra.function import FhirFunction

KMS_GRANT_ACTIONS = ("kms:GenerateDataKey*", "kms:ReEncrypt*")
"""What ``grant_encrypt_decrypt`` on the data key adds to the data grants of encrypted tables and buckets."""
RESOURCE_READ_ACTIONS = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query")
"""What the resource store reads with (heads, versions, the history GSIs). Never Scan: no operation
may scan the table (DESIGN.md §3), so no role can, unlike CDK's ``grant_read_data``."""
RESOURCE_WRITE_ACTIONS = (
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:BatchWriteItem",
)
"""What commits write with: TransactWriteItems is authorized as the Put/Update/Delete/ConditionCheck
actions it holds; BatchWriteItem removes a failed transaction's staged versions."""
LEDGER_ACTIONS = ("dynamodb:BatchGetItem", "dynamodb:BatchWriteItem")
SEARCH_PARAM_ACTIONS = ("dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:DeleteItem")
"""The runtime search parameter items (``sp#``, docs/dynamodb.md): read the partition, write in transactions."""
"""index-sync's event ledger (fhirflow.adapters.aws.dynamodb_ledger): batch reads and writes only."""
S3_READ_ACTIONS = ("s3:GetBucket*", "s3:GetObject*", "s3:List*")
S3_WRITE_ACTIONS = ("s3:Abort*", "s3:DeleteObject*")
EXPORT_RETENTION = Duration.days(7)
BLOB_NONCURRENT_RETENTION = Duration.days(30)
"""How long a deleted or overwritten blob (resource body, Binary) stays recoverable."""

_ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}
_PROJECTIONS = {
    "ALL": dynamodb.ProjectionType.ALL,
    "KEYS_ONLY": dynamodb.ProjectionType.KEYS_ONLY,
    "INCLUDE": dynamodb.ProjectionType.INCLUDE,
}
_STREAM_VIEWS = {
    "NEW_IMAGE": dynamodb.StreamViewType.NEW_IMAGE,
    "OLD_IMAGE": dynamodb.StreamViewType.OLD_IMAGE,
    "NEW_AND_OLD_IMAGES": dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,
    "KEYS_ONLY": dynamodb.StreamViewType.KEYS_ONLY,
}
_UNSUPPORTED = ("LocalSecondaryIndexes", "ProvisionedThroughput", "SSESpecification", "TableClass")


class _KeySchema:
    """A CreateTable request's key schemas, as CDK attributes."""

    def __init__(self, definition: Mapping[str, Any]) -> None:
        self.types = {
            a["AttributeName"]: _ATTRIBUTE_TYPES[a["AttributeType"]] for a in definition["AttributeDefinitions"]
        }

    def keys(self, key_schema: list[Mapping[str, str]]) -> tuple[dynamodb.Attribute, dynamodb.Attribute | None]:
        by_role = {k["KeyType"]: k["AttributeName"] for k in key_schema}
        sort = by_role.get("RANGE")
        return self._attribute(by_role["HASH"]), self._attribute(sort) if sort else None

    def _attribute(self, name: str) -> dynamodb.Attribute:
        return dynamodb.Attribute(name=name, type=self.types[name])


def table_from_schema(
    scope: Construct,
    construct_id: str,
    definition: Mapping[str, Any],
    *,
    key: kms.IKey,
    time_to_live_attribute: str | None = None,
    removal_policy: RemovalPolicy,
) -> dynamodb.Table:
    """An on-demand, KMS-encrypted, PITR-protected table shaped exactly as ``definition`` says.

    The table name is left to CloudFormation (names are account-wide; the Lambdas get it from
    their environment), so ``TableName`` in the definition is ignored.
    """
    present = [k for k in _UNSUPPORTED if k in definition]
    if present or definition.get("BillingMode") != "PAY_PER_REQUEST":
        raise ValueError(f"table_from_schema supports on-demand tables without {', '.join(_UNSUPPORTED)}")
    attributes = _KeySchema(definition)
    partition_key, sort_key = attributes.keys(definition["KeySchema"])
    stream = definition.get("StreamSpecification")
    table = dynamodb.Table(
        scope,
        construct_id,
        partition_key=partition_key,
        sort_key=sort_key,
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
        encryption_key=key,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        deletion_protection=True,
        stream=_STREAM_VIEWS[stream["StreamViewType"]] if stream and stream.get("StreamEnabled") else None,
        time_to_live_attribute=time_to_live_attribute,
        removal_policy=removal_policy,
    )
    for index in definition.get("GlobalSecondaryIndexes", []):
        index_pk, index_sk = attributes.keys(index["KeySchema"])
        projection = index["Projection"]
        table.add_global_secondary_index(
            index_name=index["IndexName"],
            partition_key=index_pk,
            sort_key=index_sk,
            projection_type=_PROJECTIONS[projection["ProjectionType"]],
            non_key_attributes=projection.get("NonKeyAttributes"),
        )
    return table


class ResourceTables(Construct):
    """The resource table (heads and versions, streamed to index-sync) and index-sync's event ledger."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey, removal_policy: RemovalPolicy) -> None:
        super().__init__(scope, construct_id)
        self.key = key
        # The names passed to the schema functions are placeholders: CloudFormation names the tables.
        self.table = table_from_schema(
            self, "Resources", schema.resource_table("fhirflow"), key=key, removal_policy=removal_policy
        )
        self.ledger = table_from_schema(
            self,
            "Ledger",
            schema.ledger_table("fhirflow-ledger"),
            key=key,
            time_to_live_attribute=schema.LEDGER_TTL,
            removal_policy=removal_policy,
        )
        acknowledge(
            self.ledger,
            "HIPAA.Security-DynamoDBInBackupPlan",
            "The ledger only records which change events were published, expiring by TTL; losing it makes "
            "index-sync announce changes again, which consumers absorb (delivery is at least once).",
        )
        self.backups = TableBackups(self, "Backups", tables=[self.table], key=key, removal_policy=removal_policy)

    def grant_resources_read_write(self, function: FhirFunction) -> None:
        """Heads, versions and the history GSIs (the resource store's access)."""
        self._grant(self.table, function, RESOURCE_READ_ACTIONS + RESOURCE_WRITE_ACTIONS, indexes=True, write=True)
        acknowledge_grant_wildcards(
            function.role,
            actions=KMS_GRANT_ACTIONS,
            resources=[f"{arn_reference(self.table)}/index/*"],
            reason="The resource table's data actions on it and its history GSIs, and its KMS key for the data.",
        )

    def grant_resources_read(self, function: FhirFunction) -> None:
        self._grant(self.table, function, RESOURCE_READ_ACTIONS, indexes=True, write=False)
        acknowledge_grant_wildcards(
            function.role,
            resources=[f"{arn_reference(self.table)}/index/*"],
            reason="Reads of the resource table include its history GSIs (and nothing else under it).",
        )

    def grant_search_params(self, function: FhirFunction, *, job_actions: Sequence[str] = ()) -> None:
        """The runtime search parameter items (``sp#…``) and nothing else of the table for writing;
        with ``job_actions`` also those actions on the reindex job items (``rj#…``)."""
        from fhirflow.adapters.aws.dynamodb_reindex_jobs import JOB_PREFIX
        from fhirflow.adapters.aws.dynamodb_searchparams import PREFIX

        grants: list[tuple[tuple[str, ...], str]] = [(SEARCH_PARAM_ACTIONS, PREFIX)]
        if job_actions:
            grants.append((tuple(job_actions), JOB_PREFIX))
        for actions, prefix in grants:
            function.role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=list(actions),
                    resources=[self.table.table_arn],
                    conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{prefix}*"]}},
                )
            )
        self.key.grant_encrypt_decrypt(function.function)
        acknowledge_grant_wildcards(
            function.role,
            actions=KMS_GRANT_ACTIONS,
            reason="The search parameter items are encrypted with the data key: the KMS actions that encrypt and "
            "decrypt them, on that key only.",
        )

    def grant_ledger_read_write(self, function: FhirFunction) -> None:
        self._grant(self.ledger, function, LEDGER_ACTIONS, indexes=False, write=True)
        acknowledge_grant_wildcards(
            function.role,
            actions=KMS_GRANT_ACTIONS,
            reason="The ledger's items are encrypted with the data key: the KMS actions that encrypt and decrypt "
            "them, on that key.",
        )

    def _grant(
        self,
        table: dynamodb.Table,
        function: FhirFunction,
        actions: tuple[str, ...],
        *,
        indexes: bool,
        write: bool,
    ) -> None:
        """The named actions on ``table`` (and its GSIs), and the data key as the table uses it."""
        resources = [table.table_arn, f"{table.table_arn}/index/*"] if indexes else [table.table_arn]
        iam.Grant.add_to_principal(grantee=function.function, actions=list(actions), resource_arns=resources)
        if write:
            self.key.grant_encrypt_decrypt(function.function)
        else:
            self.key.grant_decrypt(function.function)


class TableBackups(Construct):
    """AWS Backup copies beside point-in-time recovery: daily for 35 days, monthly for a year, in a
    vault of their own, so deleting the table (or its PITR window passing) does not lose the data."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        tables: list[dynamodb.Table],
        key: kms.IKey,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.vault = backup.BackupVault(self, "Vault", encryption_key=key, removal_policy=removal_policy)
        self.plan = backup.BackupPlan.daily_monthly1_year_retention(self, "Plan", self.vault)
        selection = self.plan.add_selection(
            "Tables", resources=[backup.BackupResource.from_dynamo_db_table(table) for table in tables]
        )
        acknowledge(
            selection,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSBackupServiceRolePolicyForBackup]",
            "The role AWS Backup assumes to take the backups, with the policy AWS maintains for that purpose.",
        )


def _private_bucket(scope: Construct, construct_id: str, **props: Any) -> s3.Bucket:
    """Every bucket: no public access, TLS 1.2+ only, versioned, owner-enforced objects."""
    return s3.Bucket(
        scope,
        construct_id,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        minimum_tls_version=1.2,
        versioned=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        **props,
    )


class ObjectBuckets(Construct):
    """S3 for resource bodies too large for DynamoDB (``blobs``), bulk export files (``exports``),
    and the server access logs of both (``access_logs``)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        removal_policy: RemovalPolicy,
        export_retention: Duration = EXPORT_RETENTION,
    ) -> None:
        super().__init__(scope, construct_id)
        abort_uploads = s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(1))
        # S3 delivers server access logs only to buckets encrypted with S3-managed keys.
        self.access_logs = _private_bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            removal_policy=removal_policy,
            lifecycle_rules=[
                abort_uploads,
                s3.LifecycleRule(
                    transitions=[
                        s3.Transition(storage_class=s3.StorageClass.GLACIER, transition_after=Duration.days(90))
                    ],
                    noncurrent_version_expiration=Duration.days(30),
                ),
            ],
        )
        encrypted: dict[str, Any] = {
            "encryption": s3.BucketEncryption.KMS,
            "encryption_key": key,
            "bucket_key_enabled": True,  # one KMS data key per bucket and period, not per object
            "server_access_logs_bucket": self.access_logs,
            "removal_policy": removal_policy,
        }
        self.blobs = _private_bucket(
            self,
            "Blobs",
            server_access_logs_prefix="blobs/",
            # Versioning keeps what a delete or overwrite replaced, for recovery; without an end,
            # every staged transaction batch and async request body would be billed forever.
            lifecycle_rules=[
                abort_uploads,
                s3.LifecycleRule(noncurrent_version_expiration=BLOB_NONCURRENT_RETENTION),
            ],
            **encrypted,
        )
        # Export files are for the client that asked to download (bulk data: "files available until
        # deleted or expired"); the export service owns the job records that point at them.
        self.exports = _private_bucket(
            self,
            "Exports",
            server_access_logs_prefix="exports/",
            lifecycle_rules=[
                abort_uploads,
                s3.LifecycleRule(expiration=export_retention, noncurrent_version_expiration=Duration.days(1)),
            ],
            **encrypted,
        )
        replication = (
            "Versioned and retained; cross-region replication needs a bucket in a second region, which is the "
            "deployer's disaster-recovery choice (add replication_rules here)."
        )
        for bucket in (self.access_logs, self.blobs, self.exports):
            acknowledge(bucket, "HIPAA.Security-S3BucketReplicationEnabled", replication)
        acknowledge(
            self.access_logs,
            "HIPAA.Security-S3DefaultEncryptionKMS",
            "S3 delivers server access logs only to buckets with SSE-S3 default encryption.",
        )

    def grant_blobs_read_write(self, function: FhirFunction) -> None:
        self.blobs.grant_read_write(function.function)
        self._acknowledge(function, S3_READ_ACTIONS + S3_WRITE_ACTIONS + KMS_GRANT_ACTIONS)

    def grant_blobs_read(self, function: FhirFunction) -> None:
        self.blobs.grant_read(function.function)  # kms:Decrypt only
        self._acknowledge(function, S3_READ_ACTIONS)

    def _acknowledge(self, function: FhirFunction, actions: tuple[str, ...]) -> None:
        acknowledge_grant_wildcards(
            function.role,
            actions=actions,
            resources=[f"{arn_reference(self.blobs)}/*"],
            reason="CDK's grant on the blob bucket: the action families it grants, on that bucket's objects only.",
        )
