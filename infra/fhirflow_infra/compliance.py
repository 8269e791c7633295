"""cdk-nag: the HIPAA Security and AWS Solutions rule packs, and the findings fhirflow accepts.

Every accepted finding is acknowledged on the construct it concerns, with the reason beside it
(cdk-nag 3 uses CDK's ``Validations.of(...).acknowledge``); the reasons end up in the cloud
assembly's policy validation report and the template metadata.
"""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import Acknowledgment, App, CfnElement, Stack, Validations
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def add_checks(app: App) -> None:
    """Run both packs on every stack at synth; an unacknowledged error fails the synth."""
    Validations.of(app).add_plugins(
        HIPAASecurityChecks(app, write_suppressions_to_cloud_formation=True),
        AwsSolutionsChecks(app, write_suppressions_to_cloud_formation=True),
    )


def arn_reference(resource: IConstruct) -> str:
    """How cdk-nag names a resource's ARN in a finding: ``<LogicalId.Arn>``."""
    cfn = resource.node.default_child
    if not isinstance(cfn, CfnElement):
        raise TypeError(f"{resource.node.path} has no CloudFormation resource")
    return f"<{Stack.of(resource).get_logical_id(cfn)}.Arn>"


def acknowledge_grant_wildcards(
    role: IConstruct,
    *,
    actions: Iterable[str] = (),
    resources: Iterable[str] = (),
    reason: str,
) -> None:
    """AwsSolutions-IAM5 findings for what a CDK ``grant_*`` call wrote: wildcard action families
    (``s3:GetObject*``) or sub-resources (``<Bucket.Arn>/*``) of one resource this stack owns."""
    for action in actions:
        acknowledge(role, f"AwsSolutions-IAM5[Action::{action}]", reason)
    for resource in resources:
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{resource}]", reason)
