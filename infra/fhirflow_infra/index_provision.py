"""The search index created at deploy: a CloudFormation custom resource whose handler
(``fhirflow_index_sync.provision.on_event``, invoked by CloudFormation) creates the index
with its mapping, so that a fresh stack answers searches and conditional writes from the start
(issue 13, defect 3; a missing index still reads as empty, as the fallback).

Idempotent: an existing index is left as it is; a new mapping (its hash is a property, so a
mapping change is an Update) is put on it; deleting the stack or the resource deletes nothing.
The handler's role may ``HEAD`` and ``PUT`` ``/<index>`` and ``PUT /<index>/_mapping``, and no
other path (``SearchDomain.grant_provision``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import CustomResource, Duration
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from fhirflow.adapters.opensearch.mappings import index_body
from fhirflow_infra.function import FhirFunction
from fhirflow_infra.packaging import ServicePackage
from fhirflow_infra.search import SearchDomain

RESOURCE_TYPE = "Custom::FhirflowSearchIndex"
INVOKED_BY_CLOUDFORMATION = (
    "Invoked by CloudFormation during a deployment, which waits for the function's own answer at the request's "
    "response URL: a failure is answered as FAILED and rolls the deployment back; there is no event to keep."
)


@dataclass(frozen=True, slots=True)
class ProvisionPackage(ServicePackage):
    """index-sync's package with its deploy-time entry point."""

    @property
    def handler(self) -> str:
        return f"{self.package}.provision.on_event"

    @property
    def function_service(self) -> str:
        return "index-provision"


def mapping_hash() -> str:
    """The index body's digest: a changed mapping changes the resource's properties (an Update)."""
    return hashlib.sha256(json.dumps(index_body(), sort_keys=True).encode()).hexdigest()[:16]


class SearchIndexProvisioning(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        package: ServicePackage,
        search: SearchDomain,
        code: lambda_.Code,
        layers: Sequence[lambda_.ILayerVersion],
        environment: Mapping[str, str],
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.handler = FhirFunction(
            self,
            "Handler",
            package=ProvisionPackage(service=package.service, package=package.package),
            code=code,
            layers=layers,
            environment=environment,
            key=key,
            description="fhirflow: creates the search index with its mapping at deploy (custom resource)",
            memory_size=512,
            timeout=Duration.minutes(2),
            invoked_by=INVOKED_BY_CLOUDFORMATION,
        )
        search.grant_provision(self.handler)
        # CloudFormation invokes the handler directly and it answers at the request's ResponseURL:
        # no Provider framework, whose Node.js function and managed-policy role would be the one
        # Lambda of the stack that FhirFunction does not build.
        self.resource = CustomResource(
            self,
            "Index",
            service_token=self.handler.function.function_arn,
            resource_type=RESOURCE_TYPE,
            properties={"Index": search.index, "Mapping": mapping_hash()},
        )
        # After the domain and its access policy (which names the handler's role) are in place.
        self.resource.node.add_dependency(search.domain)
