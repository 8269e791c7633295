"""One CloudWatch dashboard for the stack: the API, every function, the queues, the search domain,
and the functions' own EMF metrics (fhirflow.observability).

The API's requests, 4xx, 5xx and latency p50/p99 (API Gateway); per function its duration p50/p99,
errors and throttles, and index-sync's stream lag (Lambda); the dead-letter queues' depths (SQS);
the OpenSearch domain's cluster status, free storage, JVM memory pressure and CPU (AWS/ES); and,
from the functions' EMF lines, requests and latency p99 per interaction and status class, requests
per resource type, and cold starts per function. The EMF graphs are ``SEARCH`` expressions, so
every interaction, type and function that has reported shows up without a widget per value.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_opensearchservice as opensearch
from aws_cdk import aws_sqs as sqs
from constructs import Construct

PERIOD = Duration.minutes(5)
WIDTH = 8
"""Three graphs per row (the dashboard grid is 24 wide)."""
HEIGHT = 6


def emf_search(namespace: str, dimensions: tuple[str, ...], metric: str, statistic: str) -> str:
    """A ``SEARCH`` over the functions' EMF metrics with exactly these dimensions (CloudWatch
    metric math: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/search-expression-syntax.html)."""
    schema = ",".join((f'"{namespace}"', *dimensions))
    return f"SEARCH('{{{schema}}} MetricName=\"{metric}\"', '{statistic}', {int(PERIOD.to_seconds())})"


class Dashboard(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        api: apigateway.RestApi,
        functions: Mapping[str, lambda_.IFunction],
        stream_consumers: Mapping[str, lambda_.IFunction],
        dead_letter_queues: Mapping[str, sqs.IQueue],
        domain: opensearch.IDomain,
        namespace: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", default_interval=Duration.hours(3))
        self.dashboard.add_widgets(
            self._graph("API requests", [api.metric_count(period=PERIOD, statistic="Sum")]),
            self._graph(
                "API 4xx and 5xx",
                [
                    api.metric_client_error(period=PERIOD, statistic="Sum", label="4xx"),
                    api.metric_server_error(period=PERIOD, statistic="Sum", label="5xx"),
                ],
            ),
            self._graph(
                "API latency (ms)",
                [api.metric_latency(period=PERIOD, statistic=p, label=p) for p in ("p50", "p99")],
            ),
        )
        self.dashboard.add_widgets(
            *(
                self._graph(
                    f"Function duration {p} (ms)",
                    [f.metric_duration(period=PERIOD, statistic=p, label=n) for n, f in functions.items()],
                )
                for p in ("p50", "p99")
            ),
            self._graph(
                "Function errors",
                [f.metric_errors(period=PERIOD, statistic="Sum", label=n) for n, f in functions.items()],
            ),
        )
        depth = "ApproximateNumberOfMessagesVisible"
        self.dashboard.add_widgets(
            self._graph(
                "Function throttles",
                [f.metric_throttles(period=PERIOD, statistic="Sum", label=n) for n, f in functions.items()],
            ),
            self._graph(
                "Dead-letter queue depths",
                [q.metric(depth, period=PERIOD, statistic="Maximum", label=n) for n, q in dead_letter_queues.items()],
            ),
            self._graph(
                "Stream lag (ms)",
                [
                    f.metric("IteratorAge", period=PERIOD, statistic="Maximum", label=n)
                    for n, f in stream_consumers.items()
                ],
            ),
        )
        self.dashboard.add_widgets(
            self._graph(
                "OpenSearch cluster status",
                [
                    domain.metric_cluster_status_red(period=PERIOD, label="red"),
                    domain.metric_cluster_status_yellow(period=PERIOD, label="yellow"),
                ],
            ),
            self._graph(
                "OpenSearch free storage (MB)", [domain.metric_free_storage_space(period=PERIOD, statistic="Minimum")]
            ),
            self._graph(
                "OpenSearch JVM memory pressure and CPU (%)",
                [
                    domain.metric_jvm_memory_pressure(period=PERIOD, label="JVM memory pressure"),
                    domain.metric_cpu_utilization(period=PERIOD, label="CPU"),
                ],
            ),
        )
        by_interaction = ("service", "interaction", "status_class")
        self.dashboard.add_widgets(
            self._search(
                "Requests by interaction and status", emf_search(namespace, by_interaction, "Requests", "Sum")
            ),
            self._search("Latency p99 by interaction (ms)", emf_search(namespace, by_interaction, "Latency", "p99")),
            self._search(
                "Requests by resource type", emf_search(namespace, ("service", "resource_type"), "Requests", "Sum")
            ),
        )
        self.dashboard.add_widgets(
            self._search("Cold starts", emf_search(namespace, ("function_name", "service"), "ColdStart", "Sum")),
        )

    @staticmethod
    def _graph(title: str, metrics: list[cloudwatch.IMetric]) -> cloudwatch.GraphWidget:
        return cloudwatch.GraphWidget(title=title, left=metrics, width=WIDTH, height=HEIGHT)

    @staticmethod
    def _search(title: str, expression: str) -> cloudwatch.GraphWidget:
        search = cloudwatch.MathExpression(expression=expression, using_metrics={}, period=PERIOD, label="")
        return cloudwatch.GraphWidget(title=title, left=[search], width=WIDTH, height=HEIGHT)
