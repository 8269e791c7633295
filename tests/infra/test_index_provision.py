"""The search index created at deploy (fhirflow_infra.index_provision): a custom resource whose
handler is fhirflow_index_sync.provision.on_event (CloudFormation invokes it), created after
the domain, its properties changing with the mapping, its role limited to the index's paths.
(tests/infra/test_stack_executed.py runs the handler against the OpenSearch stand-in.)"""

from __future__ import annotations

from typing import Any

from fhirflow_infra.index_provision import RESOURCE_TYPE, mapping_hash
from tests.infra.conftest import Synthesized


def _resource(synthesized: Synthesized) -> tuple[str, dict[str, Any]]:
    return synthesized.only(RESOURCE_TYPE)


def test_one_index_resource_names_the_index_and_the_mappings_digest(synthesized: Synthesized) -> None:
    _, resource = _resource(synthesized)
    props = resource["Properties"]
    assert props["Index"] == synthesized.stack.search.index
    assert props["Mapping"] == mapping_hash()
    assert set(props) == {"ServiceToken", "Index", "Mapping"}


def test_it_is_created_after_the_domain_whose_policy_admits_its_handler(synthesized: Synthesized) -> None:
    _, resource = _resource(synthesized)
    depends = resource.get("DependsOn", [])
    depends = [depends] if isinstance(depends, str) else depends
    assert synthesized.logical_id(synthesized.stack.search.domain) in depends


def test_cloudformation_invokes_the_python_handler_itself(synthesized: Synthesized) -> None:
    _, resource = _resource(synthesized)
    handler_id = resource["Properties"]["ServiceToken"]["Fn::GetAtt"][0]
    assert resource["Properties"]["ServiceToken"]["Fn::GetAtt"][1] == "Arn"
    handler = synthesized.template["Resources"][handler_id]["Properties"]
    assert handler["Handler"] == "fhirflow_index_sync.provision.on_event"
    assert handler["Runtime"] == "python3.12"
    assert handler_id == synthesized.logical_id(synthesized.stack.index_provisioning.handler.function)


def test_the_handler_may_touch_nothing_but_the_index(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    role = synthesized.logical_id(stack.index_provisioning.handler.role)
    actions = set()
    for policy in synthesized.resources("AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                action = statement["Action"]
                actions |= {action} if isinstance(action, str) else set(action)
    # Its own logs and traces, and the three index requests: no table, bucket, queue or key.
    assert actions == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "xray:PutTelemetryRecords",
        "xray:PutTraceSegments",
        "es:ESHttpHead",
        "es:ESHttpPut",
    }


def test_the_stack_stays_well_below_cloudformations_resource_limit(synthesized: Synthesized) -> None:
    assert len(synthesized.template["Resources"]) <= 450
