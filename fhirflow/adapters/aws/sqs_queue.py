"""``SqsJobQueue``: the export and reindex queues in AWS (SQS queues with dead-letter queues,
infra/export.py and infra/reindex.py)."""

from __future__ import annotations

from typing import Any

from fhirflow.adapters.aws import clients


class SqsJobQueue:
    def __init__(
        self, queue_url: str, *, client: Any = None, endpoint_url: str | None = None, region: str | None = None
    ) -> None:
        self.queue_url = queue_url
        self.client = client or clients.lazy_client("sqs", endpoint_url=endpoint_url, region=region)

    def send(self, body: str, *, delay_seconds: int = 0) -> None:
        extra = {"DelaySeconds": min(max(delay_seconds, 0), 900)} if delay_seconds else {}
        with clients.translated("The job queue"):
            self.client.send_message(QueueUrl=self.queue_url, MessageBody=body, **extra)
