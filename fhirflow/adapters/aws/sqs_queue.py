"""``SqsJobQueue``: the export queue in AWS (an SQS queue with a dead-letter queue, infra/export.py)."""

from __future__ import annotations

from typing import Any

from fhirflow.adapters.aws import clients


class SqsJobQueue:
    def __init__(
        self, queue_url: str, *, client: Any = None, endpoint_url: str | None = None, region: str | None = None
    ) -> None:
        self.queue_url = queue_url
        self.client = client or clients.client("sqs", endpoint_url=endpoint_url, region=region)

    def send(self, body: str) -> None:
        with clients.translated("The job queue"):
            self.client.send_message(QueueUrl=self.queue_url, MessageBody=body)
