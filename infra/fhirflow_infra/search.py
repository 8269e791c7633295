"""The search index: an Amazon OpenSearch Service domain (DESIGN.md §4, §7).

index-sync writes it (bulk, from the DynamoDB stream) and the search service reads it; nothing
else may. The domain is IAM-only: every request is SigV4-signed by a Lambda role
(``fhirflow.adapters.opensearch.client``), and access is granted twice over, as narrowly as the
HTTP API allows:

- to each role (its identity policy), by :meth:`SearchDomain.grant_index_write` and
  :meth:`SearchDomain.grant_search`: the HTTP methods it uses on the exact paths it uses, under
  the one index (``Settings.opensearch_index``): writers ``HEAD``/``PUT /<index>`` (create it with
  the mapping on first use) and ``POST /<index>/_bulk``; readers ``POST /<index>/_search``.
  CDK's ``grant_read`` would not let a reader search (searches are ``POST``, it grants ``GET`` and
  ``HEAD``), and ``grant_write`` would let a writer delete any index;
- in the domain's resource policy, naming those roles and nothing else (no anonymous or ``*``
  principal). It is set on the CloudFormation resource itself rather than through CDK's
  ``access_policies``, which would add a custom-resource Lambda to the stack.

At rest the data is encrypted with the stack's data key, between nodes with node-to-node
encryption, and on the wire only HTTPS with TLS 1.2 or later (the forward-secret policy) is
accepted. Error logs and the slow-log pipes go to CloudWatch log groups encrypted with the data
key. Slow-log thresholds are index settings and are off by default: a slow log quotes the query
or document, which is PHI, so an operator turns them on knowingly.

The domain is not in a VPC: fhirflow's Lambdas are not either (they reach only IAM-authorized
AWS endpoints and the identity provider), and a VPC-only domain would put the search and
index-sync functions in a VPC with NAT for the identity provider's JWKS. The acknowledgment on
the domain says so; a deployer who needs a VPC adds ``vpc=`` here and to those functions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from aws_cdk import Aws, Fn, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_opensearchservice as opensearch
from constructs import Construct

from fhirflow_infra.compliance import acknowledge
from fhirflow_infra.function import FhirFunction

WRITE_PATHS = {"es:ESHttpHead": "", "es:ESHttpPut": "", "es:ESHttpPost": "/_bulk"}
"""What index-sync does, by action: the path under ``/<index>`` (exists, create, bulk)."""
SEARCH_PATHS = {"es:ESHttpPost": "/_search"}
"""What the search service does: every request of a search plan is ``POST /<index>/_search``."""
REINDEX_PATHS = {"es:ESHttpPost": "/_bulk"}
"""What a ``$reindex`` step adds: documents rewritten at their own version (bulk)."""
PROVISION_PATHS = ({"es:ESHttpHead": "", "es:ESHttpPut": ""}, {"es:ESHttpPut": "/_mapping"})
"""The deploy-time index handler (``fhirflow_infra.index_provision``): exists, create, put mapping."""


@dataclass(frozen=True, slots=True)
class DomainCapacity:
    """Nodes and storage; the defaults are the smallest layout cdk-nag's rules accept for PHI
    (two zones, dedicated masters). Size the data nodes for the index (about 2 KB per resource)."""

    data_nodes: int = 2
    data_node_type: str = "r6g.large.search"
    master_nodes: int = 3
    master_node_type: str = "m6g.large.search"
    zones: int = 2
    volume_gib: int = 100


def domain_name(scope: Construct) -> str:
    """The domain's name, known before the domain exists (the resource policy names the domain's
    ARN) yet unique to each stack that creates it: the construct path's hash and the first group of
    the stack id's UUID, ``fhirflow-<8 hex>-<8 hex>`` (lowercase, a letter first, 26 characters of
    the 28 allowed). A domain retained by a deleted stack keeps its name; the stack created again
    has a new id and creates its domain beside it instead of failing on the name."""
    path = hashlib.sha256(scope.node.path.encode()).hexdigest()[:8]
    uuid = Fn.split("/", Aws.STACK_ID, 3)[2]
    return Fn.join("-", ["fhirflow", path, Fn.select(0, Fn.split("-", uuid, 5))])


class SearchDomain(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        index: str,
        removal_policy: RemovalPolicy,
        capacity: DomainCapacity = DomainCapacity(),
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_YEAR,
    ) -> None:
        super().__init__(scope, construct_id)
        self.index = index
        self.domain_name = domain_name(self)
        self.log_groups = {
            name: logs.LogGroup(self, name, encryption_key=key, retention=log_retention, removal_policy=removal_policy)
            for name in ("ErrorLogs", "SlowSearchLogs", "SlowIndexLogs")
        }
        self.domain = opensearch.Domain(
            self,
            "Domain",
            domain_name=self.domain_name,
            version=opensearch.EngineVersion.OPENSEARCH_2_19,
            capacity=opensearch.CapacityConfig(
                data_nodes=capacity.data_nodes,
                data_node_instance_type=capacity.data_node_type,
                master_nodes=capacity.master_nodes,
                master_node_instance_type=capacity.master_node_type,
                multi_az_with_standby_enabled=False,
            ),
            zone_awareness=opensearch.ZoneAwarenessConfig(enabled=True, availability_zone_count=capacity.zones),
            ebs=opensearch.EbsOptions(volume_size=capacity.volume_gib, volume_type=ec2.EbsDeviceVolumeType.GP3),
            encryption_at_rest=opensearch.EncryptionAtRestOptions(enabled=True, kms_key=key),
            node_to_node_encryption=True,
            enforce_https=True,
            tls_security_policy=opensearch.TLSSecurityPolicy.TLS_1_2_PFS,
            logging=opensearch.LoggingOptions(
                app_log_enabled=True,
                app_log_group=self.log_groups["ErrorLogs"],
                slow_search_log_enabled=True,
                slow_search_log_group=self.log_groups["SlowSearchLogs"],
                slow_index_log_enabled=True,
                slow_index_log_group=self.log_groups["SlowIndexLogs"],
            ),
            # The log delivery policy below, instead of CDK's custom-resource Lambda.
            suppress_logs_resource_policy=True,
            enable_version_upgrade=True,
            removal_policy=removal_policy,
        )
        self.endpoint_url = f"https://{self.domain.domain_endpoint}"
        stack = Stack.of(self)
        self._domain_arn = stack.format_arn(service="es", resource="domain", resource_name=self.domain_name)
        self.log_delivery = logs.ResourcePolicy(
            self,
            "LogDelivery",
            policy_statements=[
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("es.amazonaws.com")],
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[group.log_group_arn for group in self.log_groups.values()],
                    conditions={
                        "StringEquals": {"aws:SourceAccount": stack.account},
                        "ArnLike": {"aws:SourceArn": self._domain_arn},
                    },
                )
            ],
        )
        self.domain.node.add_dependency(self.log_delivery)
        self._access: list[iam.PolicyStatement] = []
        self._acknowledge()

    def grant_index_write(self, function: FhirFunction) -> None:
        """index-sync: check and create the index, and bulk-write it."""
        self._grant(function, WRITE_PATHS)

    def grant_search(self, function: FhirFunction) -> None:
        """The search service (and bundles, which run search entries): search requests only."""
        self._grant(function, SEARCH_PATHS)

    def grant_reindex(self, function: FhirFunction) -> None:
        """The search service's ``$reindex`` steps: bulk rewrites of existing documents (no index
        creation: the index exists once anything was written)."""
        self._grant(function, REINDEX_PATHS)

    def grant_provision(self, function: FhirFunction) -> None:
        """The deploy-time custom resource: check and create the index, put its mapping."""
        for paths in PROVISION_PATHS:
            self._grant(function, paths)

    def _grant(self, function: FhirFunction, paths: dict[str, str]) -> None:
        for action, path in paths.items():
            resource = f"/{self.index}{path}"
            iam.Grant.add_to_principal(
                grantee=function.function, actions=[action], resource_arns=[self.domain.domain_arn + resource]
            )
            self._access.append(
                iam.PolicyStatement(
                    principals=[iam.ArnPrincipal(function.role.role_arn)],
                    actions=[action],
                    resources=[self._domain_arn + resource],
                )
            )
        cfn = self.domain.node.default_child
        if not isinstance(cfn, opensearch.CfnDomain):
            raise TypeError("the OpenSearch domain construct has no CfnDomain")
        cfn.access_policies = iam.PolicyDocument(statements=self._access).to_json()

    def _acknowledge(self) -> None:
        no_vpc = (
            "IAM-only domain: every request is SigV4-signed and allowed by a resource policy naming only the roles "
            "of index-sync and of the services that search, over HTTPS (TLS 1.2+). fhirflow's functions run outside "
            "a VPC (see the module doc); a VPC-only domain would need them in one, with NAT for the IdP's JWKS."
        )
        acknowledge(self.domain, "HIPAA.Security-OpenSearchInVPCOnly", no_vpc)
        acknowledge(self.domain, "AwsSolutions-OS1", no_vpc)
        acknowledge(
            self.domain,
            "AwsSolutions-OS3",
            "Access is by IAM identity (SigV4-signed requests from named Lambda roles), not by source IP: Lambda "
            "functions outside a VPC have no fixed addresses to allowlist.",
        )
