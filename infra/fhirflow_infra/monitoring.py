"""CloudWatch alarms on what needs a person: Lambda errors and throttles, stream lag, messages
in dead-letter queues and API 5xx answers, all notifying one encrypted SNS topic."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

PERIOD = Duration.minutes(5)
STREAM_LAG_ALARM = Duration.minutes(5)
API_5XX_THRESHOLD = 5
"""Server errors per period before the alarm fires (a 503 for DynamoDB throttling is one)."""


def alarm_topic_name(stack: Stack) -> str:
    """The alarm topic's name: one per stack (topics are deleted with their stack)."""
    return f"{stack.stack_name}-alarms"


class Alarms(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        functions: Mapping[str, lambda_.IFunction],
        stream_consumers: Mapping[str, lambda_.IFunction],
        dead_letter_queues: Mapping[str, sqs.IQueue],
        api: apigateway.RestApi,
        email: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(
            self,
            "Topic",
            # Named, so the data key's policy can name it without a dependency cycle (encryption.py).
            topic_name=alarm_topic_name(Stack.of(self)),
            display_name="fhirflow alarms",
            master_key=key,
            enforce_ssl=True,
        )
        if email:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        for name, function in functions.items():
            self._alarm(f"{name}-errors", function.metric_errors(period=PERIOD, statistic="Sum"), 1, "raised errors")
            self._alarm(
                f"{name}-throttles", function.metric_throttles(period=PERIOD, statistic="Sum"), 1, "was throttled"
            )
        for name, function in stream_consumers.items():
            lag = function.metric("IteratorAge", period=PERIOD, statistic="Maximum")
            self._alarm(f"{name}-lag", lag, STREAM_LAG_ALARM.to_milliseconds(), "is behind its stream by minutes")
        for name, queue in dead_letter_queues.items():
            depth = queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
            self._alarm(f"{name}-dead-letters", depth, 1, "holds messages that failed")
        self._alarm(
            "api-5xx", api.metric_server_error(period=PERIOD, statistic="Sum"), API_5XX_THRESHOLD, "answered 5xx"
        )

    def _alarm(self, name: str, metric: cloudwatch.IMetric, threshold: float, what: str) -> None:
        subject = name.rsplit("-", 1)[0]
        alarm = cloudwatch.Alarm(
            self,
            name,
            metric=metric,
            threshold=threshold,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"fhirflow {subject} {what}",
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        alarm.add_ok_action(actions.SnsAction(self.topic))
        self.alarms[name] = alarm
