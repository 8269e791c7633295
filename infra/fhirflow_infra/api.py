"""The FHIR REST API: API Gateway resources and methods generated from :data:`fhirflow.routes.ROUTES`.

Each route becomes one method on an explicit resource tree (no ``{proxy+}``), integrated with
the Lambda of the route's service, so a route added to the table exists here on the next synth,
and a route whose service has no Lambda yet fails the synth instead of answering 500.
API Gateway's own errors (unknown path, throttling, timeouts) are answered as OperationOutcomes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import Aws, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from fhirflow import compression, cors
from fhirflow.routes import ROUTES, Route
from fhirflow_infra.compliance import acknowledge

FHIR_JSON = "application/fhir+json"

_ACCESS_LOG_FIELDS = {
    # Who and what, never bodies or query strings (search parameters can name a patient).
    "requestId": apigateway.AccessLogField.context_request_id(),
    "extendedRequestId": apigateway.AccessLogField.context_extended_request_id(),
    "requestTime": apigateway.AccessLogField.context_request_time(),
    "ip": apigateway.AccessLogField.context_identity_source_ip(),
    "httpMethod": apigateway.AccessLogField.context_http_method(),
    "resourcePath": apigateway.AccessLogField.context_resource_path(),
    "protocol": apigateway.AccessLogField.context_protocol(),
    "status": apigateway.AccessLogField.context_status(),
    "responseLength": apigateway.AccessLogField.context_response_length(),
    "responseLatency": apigateway.AccessLogField.context_response_latency(),
    "integrationLatency": apigateway.AccessLogField.context_integration_latency(),
    "errorType": apigateway.AccessLogField.context_error_response_type(),
    "xrayTraceId": apigateway.AccessLogField.context_xray_trace_id(),
}

# (response type, status, OperationOutcome issue code) for API Gateway's own answers.
_GATEWAY_RESPONSES = (
    # API Gateway says 403 "Missing Authentication Token" for a path or method it has no route for.
    (apigateway.ResponseType.MISSING_AUTHENTICATION_TOKEN, "404", "not-found"),
    (apigateway.ResponseType.RESOURCE_NOT_FOUND, "404", "not-found"),
    (apigateway.ResponseType.REQUEST_TOO_LARGE, "413", "too-long"),
    (apigateway.ResponseType.THROTTLED, "429", "throttled"),
    (apigateway.ResponseType.QUOTA_EXCEEDED, "429", "throttled"),
    (apigateway.ResponseType.INTEGRATION_TIMEOUT, "504", "timeout"),
    (apigateway.ResponseType.DEFAULT_4_XX, None, "processing"),
    (apigateway.ResponseType.DEFAULT_5_XX, None, "exception"),
)


_AUTHORIZED_IN_SERVICE = (
    "SMART on FHIR authorization is enforced in the services (fhirflow.authz): bearer tokens verified "
    "against the issuer's JWKS or by introspection, then scopes and compartments per interaction and per "
    "resource, which no gateway authorizer can decide. /metadata and /.well-known/smart-configuration are "
    "public by the FHIR and SMART specifications."
)


@dataclass(frozen=True, slots=True)
class Throttle:
    """The stage's default method throttling (token bucket: steady requests per second and burst),
    for every caller together; with API keys, the usage plan applies the same per key."""

    rate_limit: float = 100
    burst_limit: int = 200


DEFAULT_THROTTLE = Throttle()


def operation_outcome_template(code: str) -> str:
    """An OperationOutcome whose diagnostics is API Gateway's message (``messageString`` is JSON-quoted)."""
    outcome = json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": "__MESSAGE__"}],
        }
    )
    return outcome.replace('"__MESSAGE__"', "$context.error.messageString")


def _cors_preflight(origins: Sequence[str]) -> apigateway.CorsOptions | None:
    if not origins:
        return None
    return apigateway.CorsOptions(
        allow_origins=list(origins) if "*" not in origins else apigateway.Cors.ALL_ORIGINS,
        allow_methods=list(cors.ALLOWED_METHODS),
        allow_headers=list(cors.ALLOWED_HEADERS),
        max_age=Duration.seconds(cors.PREFLIGHT_MAX_AGE_SECONDS),
    )


class FhirApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Mapping[str, lambda_.IFunction],
        key: kms.IKey,
        routes: Sequence[Route] = ROUTES,
        stage_name: str = "fhir",
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_YEAR,
        cors_origins: Sequence[str] = (),
        throttle: Throttle = Throttle(),
        api_keys: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        missing = sorted({r.service for r in routes} - set(functions))
        if missing:
            raise ValueError(f"the route table names services without a Lambda in this stack: {missing}")
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", encryption_key=key, retention=log_retention, removal_policy=RemovalPolicy.RETAIN
        )
        self.rest_api = apigateway.RestApi(
            self,
            "Api",
            rest_api_name=Stack.of(self).stack_name,  # also the ApiName dimension of the API's metrics
            description="fhirflow FHIR R4 API",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            # Browser apps' preflights (fhirflow.cors); the Lambdas add the headers to the answers.
            default_cors_preflight_options=_cors_preflight(cors_origins),
            # Binary resources travel as raw bytes; every body reaches the Lambdas base64-encoded,
            # which fhirflow.http decodes.
            binary_media_types=["*/*"],
            # gzip/deflate when the client accepts it, from the same size up as the local gateway
            # (fhirflow.compression): /metadata and search Bundles shrink about tenfold.
            min_compression_size=Size.bytes(compression.MIN_COMPRESSED_BYTES),
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigateway.StageOptions(
                stage_name=stage_name,
                # No caller may take the account's Lambda concurrency and DynamoDB capacity from all others.
                throttling_rate_limit=throttle.rate_limit,
                throttling_burst_limit=throttle.burst_limit,
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigateway.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # it would log request and response bodies: PHI
                access_log_destination=apigateway.LogGroupLogDestination(self.access_logs),
                access_log_format=apigateway.AccessLogFormat.custom(
                    json.dumps({k: str(v) for k, v in _ACCESS_LOG_FIELDS.items()})
                ),
            ),
        )
        integrations = {service: _proxy_integration(function) for service, function in functions.items()}
        for service, function in functions.items():
            # One permission per function, for this API's deployed methods (no test-invoke). A
            # LambdaIntegration adds one per method: with every route also under /tenant/{tenant},
            # that took the stack past CloudFormation's 500 resources. Which function a method
            # reaches is the method's integration, set above from the route table.
            function.add_permission(
                f"InvokeFrom{service.title().replace('-', '')}Api",
                principal=iam.ServicePrincipal("apigateway.amazonaws.com"),
                source_arn=self.rest_api.arn_for_execute_api("*", "/*", self.rest_api.deployment_stage.stage_name),
            )
        self.methods: dict[tuple[str, str], apigateway.Method] = {}
        for route in routes:
            resource = self._resource(route.segments)
            method = resource.add_method(route.method, integrations[route.service], api_key_required=api_keys)
            for rule in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
                acknowledge(method, rule, _AUTHORIZED_IN_SERVICE)
            self.methods[(route.method, route.pattern)] = method
        self._preflights_answer_text()
        self.api_key: apigateway.IApiKey | None = None
        if api_keys:
            self._usage_plan(throttle)
        for response_type, status, code in _GATEWAY_RESPONSES:
            self.rest_api.add_gateway_response(
                f"{response_type.response_type}",
                type=response_type,
                status_code=status,
                response_headers={"Content-Type": f"'{FHIR_JSON}'"},
                templates={"application/json": operation_outcome_template(code)},
            )
        self._acknowledge()

    def _usage_plan(self, throttle: Throttle) -> None:
        """API keys (``x-api-key``) on every route but the preflights, one usage plan with the
        stage's throttle per key, and a first key (its value is in the console, or
        ``aws apigateway get-api-key --include-value``). Keys identify client applications; they
        are not authorization, which stays with the bearer token."""
        plan = self.rest_api.add_usage_plan(
            "UsagePlan",
            description="fhirflow clients: per-key throttling",
            throttle=apigateway.ThrottleSettings(rate_limit=throttle.rate_limit, burst_limit=throttle.burst_limit),
            api_stages=[apigateway.UsagePlanPerApiStage(api=self.rest_api, stage=self.rest_api.deployment_stage)],
        )
        self.api_key = self.rest_api.add_api_key("ApiKey", description="fhirflow: the first client application")
        plan.add_api_key(self.api_key)

    def _preflights_answer_text(self) -> None:
        """The preflights' mock integrations answer from a text mapping template; with binary media
        types ``*/*`` API Gateway would treat that answer as binary and fail the preflight with 500
        unless the integration converts it to text (CorsOptions offers no way to say so)."""
        for method in self.rest_api.methods:
            cfn = method.node.default_child
            if method.http_method == "OPTIONS" and isinstance(cfn, apigateway.CfnMethod):
                cfn.add_property_override("Integration.ContentHandling", "CONVERT_TO_TEXT")

    def _resource(self, segments: Sequence[str]) -> apigateway.IResource:
        resource: apigateway.IResource = self.rest_api.root
        for segment in segments:
            resource = resource.get_resource(segment) or resource.add_resource(segment)
        return resource

    @property
    def url(self) -> str:
        return self.rest_api.url

    def _acknowledge(self) -> None:
        stage = self.rest_api.deployment_stage
        acknowledge(
            stage,
            "HIPAA.Security-APIGWCacheEnabledAndEncrypted",
            "Authorization happens in the services (per token, scope and compartment): a gateway cache would "
            "serve one caller's authorized response to another.",
        )
        acknowledge(
            stage,
            "HIPAA.Security-APIGWSSLEnabled",
            "Client certificates authenticate API Gateway to HTTP backends; every integration here is a Lambda "
            "invocation, signed with IAM.",
        )
        acknowledge(
            stage,
            "AwsSolutions-APIG3",
            "A WAF web ACL is the deployer's to attach: the managed rule groups' body-size and XSS rules reject "
            "legitimate FHIR bundles and narratives, so it needs rules tuned to FHIR payloads.",
        )
        acknowledge(
            self.rest_api,
            "AwsSolutions-APIG2",
            "The services validate every request against the R4 StructureDefinitions and answer with "
            "path-precise OperationOutcomes; API Gateway's validator would answer in its own format.",
        )
        cloud_watch_role = self.rest_api.node.try_find_child("CloudWatchRole")
        if cloud_watch_role is not None:
            acknowledge(
                cloud_watch_role,
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]",
                "API Gateway's account-wide logging role uses the service's own managed policy, made for it.",
            )


def _proxy_integration(function: lambda_.IFunction) -> apigateway.Integration:
    """A Lambda proxy integration (the event format fhirflow.http reads) that adds no permission:
    the API grants one per function."""
    path = f"lambda:path/2015-03-31/functions/{function.function_arn}/invocations"
    uri = f"arn:{Aws.PARTITION}:apigateway:{Aws.REGION}:{path}"
    return apigateway.Integration(type=apigateway.IntegrationType.AWS_PROXY, integration_http_method="POST", uri=uri)
