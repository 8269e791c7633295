"""The audit archive: every API request's audit record in S3, queryable with Athena.

The records are already written once, as log lines of the API functions (``fhirflow.authz.audit``:
in Lambda the record's fields are the line's top-level keys). A subscription filter on each API
function's log group selects them (``{ $.audit = "fhir-request" }``) into a Firehose stream, which
decompresses CloudWatch's batches, keeps each line's message, and writes gzipped JSON lines under
``audit/YYYY/MM/DD/`` in a bucket encrypted with the stack's key, expiring after the retention of
``fhirflow:auditRetentionDays``.

Why this path and not a write from the handler: a per-request PutObject adds a call (latency,
failure handling) to every request and costs $5 per million requests in PUTs alone; buffering
in the function loses records when Lambda freezes or recycles it. The log group is already the
durable record, CloudWatch Logs retries the delivery, and Firehose charges by the GB
(about $0.03 per GB ingested, plus the decompression per GB): a million 1 KB records is about a GB.

A Glue database and table describe the files for Athena: one column per field of
:class:`fhirflow.authz.audit.AuditRecord` (derived from it, so they cannot drift apart), the
OpenX JSON SerDe, and a ``day`` partition filled by partition projection (no crawler, no
``MSCK REPAIR``).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin, get_type_hints

from aws_cdk import CfnMapping, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_logs_destinations as destinations
from aws_cdk import aws_s3 as s3
from constructs import Construct

from fhirflow.authz.audit import AUDIT_KIND, AuditRecord
from fhirflow_infra.compliance import acknowledge, acknowledge_grant_wildcards, arn_reference

AUDIT_RETENTION_DAYS = 2190
"""Six years by default: HIPAA's retention of required documentation (45 CFR 164.316(b)(2))."""
FILTER_PATTERN = f'{{ $.audit = "{AUDIT_KIND}" }}'
"""The API functions' log lines that are audit records (CloudWatch Logs JSON filter syntax)."""
RECORDS_PREFIX = "audit/"
PARTITION = "day"
PARTITION_FORMAT = "yyyy/MM/dd"
TABLE_NAME = "requests"
FIREHOSE_CIDR_MAPPING = "awscdkawskinesisfirehoseCidrBlocks"
_HIVE_TYPES = {str: "string", int: "int", float: "double", bool: "boolean"}


def hive_type(annotation: Any) -> str:
    """The Glue (Hive) type of a field of the audit record: scalars, optional scalars, lists, and
    nested TypedDicts as ``struct<...>``."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        present = [a for a in get_args(annotation) if a is not type(None)]
        if len(present) != 1:
            raise TypeError(f"an audit field must have one type besides None, not {annotation}")
        return hive_type(present[0])
    if origin is list:
        (item,) = get_args(annotation)
        return f"array<{hive_type(item)}>"
    if typing.is_typeddict(annotation):
        fields = ",".join(f"{name}:{hive_type(hint)}" for name, hint in get_type_hints(annotation).items())
        return f"struct<{fields}>"
    if annotation in _HIVE_TYPES:
        return _HIVE_TYPES[annotation]
    raise TypeError(f"no Glue type for the audit field type {annotation}")


def audit_columns() -> list[tuple[str, str]]:
    """(name, Glue type) for each field of the audit record, in its order."""
    return [(name, hive_type(hint)) for name, hint in get_type_hints(AuditRecord).items()]


def database_name(stack: Stack) -> str:
    """Glue names are lower case letters, digits and underscores."""
    return re.sub(r"[^a-z0-9_]", "_", stack.stack_name.lower()) + "_audit"


class AuditArchive(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        log_groups: Mapping[str, logs.ILogGroup],
        access_logs: s3.IBucket,
        retention: Duration,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.bucket = s3.Bucket(
            self,
            "Records",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="audit/",
            removal_policy=removal_policy,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=retention,
                    noncurrent_version_expiration=Duration.days(1),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
        )
        acknowledge(
            self.bucket,
            "HIPAA.Security-S3BucketReplicationEnabled",
            "Versioned and retained; cross-region replication needs a bucket in a second region, which is the "
            "deployer's disaster-recovery choice (add replication_rules here).",
        )
        self.delivery_errors = logs.LogGroup(
            self,
            "DeliveryErrors",
            encryption_key=key,
            retention=logs.RetentionDays.ONE_YEAR,
            removal_policy=removal_policy,
        )
        destination = firehose.S3Bucket(
            self.bucket,
            data_output_prefix=f"{RECORDS_PREFIX}!{{timestamp:{PARTITION_FORMAT}}}/",
            error_output_prefix="errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/",
            buffering_interval=Duration.minutes(5),
            buffering_size=Size.mebibytes(64),
            compression=firehose.Compression.GZIP,
            encryption_key=key,
            logging_config=firehose.EnableLogging(self.delivery_errors),
            processors=[
                # CloudWatch Logs sends gzipped batches of log events: unpack them, keep each
                # event's message (the audit line), one per line.
                firehose.DecompressionProcessor(),
                firehose.CloudWatchLogProcessor(data_message_extraction=True),
                firehose.AppendDelimiterToRecordProcessor(),
            ],
        )
        self.stream = firehose.DeliveryStream(
            self,
            "Delivery",
            destination=destination,
            encryption=firehose.StreamEncryption.customer_managed_key(key),
        )
        # The L2 stream adds Firehose's CIDR blocks per region for destinations in a VPC (Redshift,
        # OpenSearch); an S3 destination never reads them, and an unused mapping is a lint warning.
        for child in list(stack.node.children):
            if isinstance(child, CfnMapping) and stack.resolve(child.logical_id) == FIREHOSE_CIDR_MAPPING:
                stack.node.try_remove_child(child.node.id)
        self.logs_role = iam.Role(
            self,
            "LogsRole",
            assumed_by=iam.ServicePrincipal("logs.amazonaws.com"),
            description="CloudWatch Logs puts the API functions' audit lines into the audit archive's stream",
        )
        self.stream.grant_put_records(self.logs_role)
        for name, log_group in log_groups.items():
            logs.SubscriptionFilter(
                self,
                f"Subscription-{name}",
                log_group=log_group,
                destination=destinations.FirehoseDestination(self.stream, role=self.logs_role),
                filter_pattern=logs.FilterPattern.literal(FILTER_PATTERN),
            )
        self.database_name = database_name(stack)
        self.table_name = TABLE_NAME
        self.database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=stack.account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=self.database_name, description="fhirflow audit records (one row per API request)"
            ),
        )
        location = f"s3://{self.bucket.bucket_name}/{RECORDS_PREFIX}"
        self.table = glue.CfnTable(
            self,
            "Table",
            catalog_id=stack.account,
            database_name=self.database_name,
            table_input=glue.CfnTable.TableInputProperty(
                name=TABLE_NAME,
                description="fhirflow.authz.audit.AuditRecord, one per API request, partitioned by day",
                table_type="EXTERNAL_TABLE",
                partition_keys=[glue.CfnTable.ColumnProperty(name=PARTITION, type="string")],
                parameters={
                    "classification": "json",
                    "compressionType": "gzip",
                    "projection.enabled": "true",
                    f"projection.{PARTITION}.type": "date",
                    f"projection.{PARTITION}.format": PARTITION_FORMAT,
                    f"projection.{PARTITION}.range": "2024/01/01,NOW",
                    f"projection.{PARTITION}.interval": "1",
                    f"projection.{PARTITION}.interval.unit": "DAYS",
                    "storage.location.template": f"{location}${{{PARTITION}}}/",
                },
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    columns=[glue.CfnTable.ColumnProperty(name=n, type=t) for n, t in audit_columns()],
                    location=location,
                    input_format="org.apache.hadoop.mapred.TextInputFormat",
                    output_format="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
                    serde_info=glue.CfnTable.SerdeInfoProperty(
                        serialization_library="org.openx.data.jsonserde.JsonSerDe",
                        parameters={"ignore.malformed.json": "true"},
                    ),
                ),
            ),
        )
        self.table.node.add_dependency(self.database)
        self._acknowledge()

    def _acknowledge(self) -> None:
        for role in self.node.find_all():
            if isinstance(role, iam.Role):
                acknowledge(
                    role,
                    "HIPAA.Security-IAMNoInlinePolicy",
                    "CDK's grants write this role's own policy, each statement scoped to the audit stream, bucket "
                    "or key it names.",
                )
        acknowledge_grant_wildcards(
            self,
            actions=("s3:Abort*", "s3:DeleteObject*", "s3:GetBucket*", "s3:GetObject*", "s3:List*"),
            resources=(f"{arn_reference(self.bucket)}/*",),
            reason="Firehose's grant on the audit bucket (CDK's S3 destination): its objects only.",
        )
        acknowledge_grant_wildcards(
            self,
            actions=("kms:GenerateDataKey*", "kms:ReEncrypt*"),
            reason="CDK's grant on the stack's key for the audit stream and its bucket: that key only.",
        )
