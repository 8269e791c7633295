"""The OpenSearch domain (SearchDomain): encrypted at rest with the data key, node to node and on
the wire; logging to encrypted log groups; reachable by exactly the roles that write or search the
index, on exactly the paths they use. And no role may scan the resource table or the ledger."""

from __future__ import annotations

import re
from typing import Any

from tests.infra.conftest import Synthesized


def _domain(synthesized: Synthesized) -> dict[str, Any]:
    _, domain = synthesized.only("AWS::OpenSearchService::Domain")
    props: dict[str, Any] = domain["Properties"]
    return props


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _identity_statements(synthesized: Synthesized) -> dict[str, list[dict[str, Any]]]:
    """Every role's identity-policy statements, by the role's logical id."""
    found: dict[str, list[dict[str, Any]]] = {}
    for policy in synthesized.resources("AWS::IAM::Policy").values():
        for role in policy["Properties"]["Roles"]:
            found.setdefault(role["Ref"], []).extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def _role(synthesized: Synthesized, function: Any) -> str:
    return str(synthesized.stack.get_logical_id(function.role.node.default_child))


STACK_ID = "arn:aws:cloudformation:us-east-1:123456789012:stack/fhirflow/8f3a9c10-5d2e-11ef-9b1a-0a1b2c3d4e5f"
_PSEUDO = {"AWS::StackId": STACK_ID, "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}


def evaluate(value: Any, stack_id: str = STACK_ID) -> Any:
    """A template expression as CloudFormation would resolve it in a stack with this id (other
    resources' attributes stay as ``<LogicalId.Attribute>``)."""
    if isinstance(value, list):
        return [evaluate(v, stack_id) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        [(function, argument)] = value.items()
        if function == "Ref":
            return {**_PSEUDO, "AWS::Partition": "aws", "AWS::StackId": stack_id}.get(argument, f"<{argument}>")
        if function == "Fn::GetAtt":
            return f"<{argument[0]}.{argument[1]}>"
        if function == "Fn::Join":
            return str(argument[0]).join(evaluate(argument[1], stack_id))
        if function == "Fn::Split":
            return str(evaluate(argument[1], stack_id)).split(argument[0])
        if function == "Fn::Select":
            return evaluate(argument[1], stack_id)[int(argument[0])]
    return {k: evaluate(v, stack_id) for k, v in value.items()}


def _domain_name(synthesized: Synthesized, stack_id: str = STACK_ID) -> str:
    return str(evaluate(synthesized.stack.resolve(synthesized.stack.search.domain_name), stack_id))


def _path(resource: Any, domain_name: str) -> str:
    """The path under the domain that a resource-policy statement names (``index/_bulk``)."""
    name, _, path = str(evaluate(resource)).split(":domain/")[1].partition("/")
    assert name == domain_name
    return path


def test_the_domain_is_encrypted_at_rest_between_nodes_and_on_the_wire(synthesized: Synthesized) -> None:
    domain = _domain(synthesized)
    key = synthesized.logical_id(synthesized.stack.data_key)
    assert domain["EncryptionAtRestOptions"] == {"Enabled": True, "KmsKeyId": {"Ref": key}}
    assert domain["NodeToNodeEncryptionOptions"] == {"Enabled": True}
    assert domain["DomainEndpointOptions"] == {
        "EnforceHTTPS": True,
        "TLSSecurityPolicy": "Policy-Min-TLS-1-2-PFS-2023-10",
    }
    assert domain["ClusterConfig"]["ZoneAwarenessEnabled"] is True
    assert domain["ClusterConfig"]["DedicatedMasterEnabled"] is True
    assert "AdvancedSecurityOptions" not in domain  # IAM-only: no internal users, no anonymous access


def test_error_and_slow_logs_go_to_log_groups_encrypted_with_the_data_key(synthesized: Synthesized) -> None:
    options = _domain(synthesized)["LogPublishingOptions"]
    assert set(options) == {"ES_APPLICATION_LOGS", "SEARCH_SLOW_LOGS", "INDEX_SLOW_LOGS"}
    groups = synthesized.resources("AWS::Logs::LogGroup")
    key = synthesized.logical_id(synthesized.stack.data_key)
    for option in options.values():
        assert option["Enabled"] is True
        group = groups[option["CloudWatchLogsLogGroupArn"]["Fn::GetAtt"][0]]["Properties"]
        assert group["KmsKeyId"] == {"Fn::GetAtt": [key, "Arn"]}
        assert group["RetentionInDays"] >= 365
    # OpenSearch may write them (for this domain only), without a custom-resource Lambda.
    _, policy = synthesized.only("AWS::Logs::ResourcePolicy")
    document = str(evaluate(policy["Properties"]["PolicyDocument"]))
    assert "es.amazonaws.com" in document
    assert f":domain/{_domain_name(synthesized)}" in document


def test_the_resource_policy_names_only_the_writer_and_the_searchers(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    index_sync = _role(synthesized, stack.index_sync.handler)
    searchers = {
        _role(synthesized, stack.api_functions[name]) for name in ("crud", "search", "bundle", "subscriptions")
    }
    searchers.add(_role(synthesized, stack.export.worker))
    searchers.add(_role(synthesized, stack.transactions.functions["prepare"]))
    search_role = _role(synthesized, stack.api_functions["search"])
    granted: dict[str, set[tuple[str, str]]] = {}
    for statement in _domain(synthesized)["AccessPolicies"]["Statement"]:
        assert statement["Effect"] == "Allow"
        principal = statement["Principal"]["AWS"]["Fn::GetAtt"][0]  # a role of this stack, never "*"
        for action in _actions(statement):
            granted.setdefault(principal, set()).add((action, _path(statement["Resource"], _domain_name(synthesized))))
    reindex_worker = _role(synthesized, stack.reindexing.worker)
    index = stack.search.index
    assert granted.pop(index_sync) == {
        ("es:ESHttpHead", index),
        ("es:ESHttpPut", index),
        ("es:ESHttpPost", f"{index}/_bulk"),
    }
    # The deploy-time index handler: exists, create, put mapping (fhirflow_infra.index_provision).
    assert granted.pop(_role(synthesized, stack.index_provisioning.handler)) == {
        ("es:ESHttpHead", index),
        ("es:ESHttpPut", index),
        ("es:ESHttpPut", f"{index}/_mapping"),
    }
    # $reindex chunks walk the index and rewrite documents in bulk: the worker's, not the API's
    worker = granted.pop(reindex_worker)
    assert worker == {("es:ESHttpPost", f"{index}/_search"), ("es:ESHttpPost", f"{index}/_bulk")}
    assert granted == {role: {("es:ESHttpPost", f"{index}/_search")} for role in searchers}
    assert search_role in searchers


def test_only_the_writer_and_the_searchers_have_opensearch_http_permissions(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    domain = synthesized.logical_id(stack.search.domain)
    index = stack.search.index
    with_es = {
        role: {
            (action, resource["Fn::Join"][1][-1])
            for statement in statements
            for action in _actions(statement)
            if action.startswith("es:")
            for resource in _resources(statement)
        }
        for role, statements in _identity_statements(synthesized).items()
    }
    with_es = {role: grants for role, grants in with_es.items() if grants}
    assert with_es == {
        _role(synthesized, stack.index_sync.handler): {
            ("es:ESHttpHead", f"/{index}"),
            ("es:ESHttpPut", f"/{index}"),
            ("es:ESHttpPost", f"/{index}/_bulk"),
        },
        _role(synthesized, stack.index_provisioning.handler): {
            ("es:ESHttpHead", f"/{index}"),
            ("es:ESHttpPut", f"/{index}"),
            ("es:ESHttpPut", f"/{index}/_mapping"),
        },
        **{
            _role(synthesized, searcher): {("es:ESHttpPost", f"/{index}/_search")}
            for searcher in (
                stack.api_functions["crud"],
                stack.api_functions["bundle"],
                stack.api_functions["subscriptions"],  # type-level $status searches what the caller may read
                stack.transactions.functions["prepare"],
                stack.export.worker,
            )
        },
        _role(synthesized, stack.api_functions["search"]): {("es:ESHttpPost", f"/{index}/_search")},
        # the $reindex worker walks the index and rewrites documents in bulk; the search API no longer does
        _role(synthesized, stack.reindexing.worker): {
            ("es:ESHttpPost", f"/{index}/_search"),
            ("es:ESHttpPost", f"/{index}/_bulk"),
        },
    }
    for statements in _identity_statements(synthesized).values():
        for statement in statements:
            if any(action.startswith("es:") for action in _actions(statement)):
                for resource in _resources(statement):
                    assert resource["Fn::Join"][1][0] == {"Fn::GetAtt": [domain, "Arn"]}


def _resources(statement: dict[str, Any]) -> list[Any]:
    """A statement's resources (CDK merges statements with the same action into one list)."""
    resources = statement["Resource"]
    return resources if isinstance(resources, list) else [resources]


def test_the_functions_that_search_or_index_are_pointed_at_the_domain(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    domain = synthesized.logical_id(stack.search.domain)
    for function in (stack.index_sync.handler, stack.api_functions["search"], stack.api_functions["bundle"]):
        env = synthesized.template["Resources"][synthesized.logical_id(function.function)]["Properties"]
        variables = env["Environment"]["Variables"]
        assert variables["FHIRFLOW_SEARCH_INDEX"] == "opensearch"
        assert variables["FHIRFLOW_OPENSEARCH_URL"] == {
            "Fn::Join": ["", ["https://", {"Fn::GetAtt": [domain, "DomainEndpoint"]}]]
        }
        assert "FHIRFLOW_OPENSEARCH_AUTH" not in variables  # the default, SigV4


def test_no_role_may_scan_a_table(synthesized: Synthesized) -> None:
    """No operation may scan the table (DESIGN.md §3): CDK's grant_read_data would allow it."""
    for role, statements in _identity_statements(synthesized).items():
        actions = {action for statement in statements for action in _actions(statement)}
        assert "dynamodb:Scan" not in actions, role
        assert "dynamodb:*" not in actions, role


def test_an_opensearch_request_gives_up_well_inside_every_callers_timeout(synthesized: Synthesized) -> None:
    """The client's worst case for one request (each attempt waits the full timeout) leaves the
    Lambda time for a search plan's second request and for answering: 503, never Lambda's timeout."""
    from fhirflow.adapters.opensearch.client import opensearch_client

    transport = opensearch_client("http://127.0.0.1:9").transport  # builds only; nothing is sent
    attempts = 1 + transport.max_retries
    worst = transport.get_connection().timeout * attempts
    functions = synthesized.resources("AWS::Lambda::Function")
    for statements_role, statements in _identity_statements(synthesized).items():
        if not any(a.startswith("es:") for s in statements for a in _actions(s)):
            continue
        [timeout] = [
            f["Properties"]["Timeout"]
            for f in functions.values()
            if f["Properties"]["Role"]["Fn::GetAtt"][0] == statements_role
        ]
        assert 2 * worst < timeout, (statements_role, worst, timeout)


def test_a_stack_created_again_names_its_domain_anew(synthesized: Synthesized) -> None:
    """The domain is retained when its stack is deleted: the stack created again (a new stack id)
    must not ask for the retained domain's name, and an update (the same id) must keep it."""
    name = _domain_name(synthesized)
    again = _domain_name(synthesized, STACK_ID.replace("8f3a9c10", "0c4e7b21"))
    assert name != again
    assert name == _domain_name(synthesized)
    for candidate in (name, again):
        assert re.fullmatch(r"[a-z][a-z0-9-]{2,27}", candidate), candidate  # OpenSearch's rule for names
    assert evaluate(_domain(synthesized)["DomainName"]) == name
