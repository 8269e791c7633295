"""The customer-managed KMS key that encrypts fhirflow's data at rest.

One key for the table, buckets, queues, topic, secret, Lambda environments and log groups: they
hold the same PHI, so they share one access boundary, and a key costs money per month. AWS
services that write with it on their own account (CloudWatch Logs, CloudWatch alarms, EventBridge)
are allowed here, each limited to its use.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Aws, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from fhirflow_infra.monitoring import alarm_topic_name

_ENCRYPT_DECRYPT = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]


class DataKey(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy = RemovalPolicy.RETAIN
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/{Stack.of(self).stack_name}/data",
            description="fhirflow data at rest (DynamoDB, S3, SQS, SNS, Secrets Manager, Lambda, CloudWatch Logs)",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        # CloudWatch Logs uses the key itself (docs: encrypt-log-data-kms), for this account's log groups only.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
                actions=_ENCRYPT_DECRYPT,
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:*"
                        )
                    }
                },
            )
        )
        # CloudWatch alarms publish to the encrypted alarm topic (the statement the SNS guide gives),
        # for that topic only: SNS asks KMS with the topic's ARN as encryption context. EventBridge's
        # access for the queues it feeds is added by the SqsQueue targets, limited to this account.
        stack = Stack.of(self)
        alarm_topic = stack.format_arn(
            service="sns", resource=alarm_topic_name(stack), arn_format=ArnFormat.NO_RESOURCE_NAME
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"kms:EncryptionContext:aws:sns:topicArn": alarm_topic}},
            )
        )
