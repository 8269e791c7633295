"""A queue, its dead-letter queue and the function that drains it: how export and ``$reindex``
run their long work (one message per step; a step that does not finish queues the next).

Built in the caller's scope, so the constructs keep the ids (and logical ids) they had there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from fhirflow_infra.events import dead_letter_queue, encrypted_queue
from fhirflow_infra.function import INVOKED_BY_QUEUE, FhirFunction
from fhirflow_infra.packaging import ServicePackage


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """The service's own numbers (its ``limits`` module): the worker's timeout, the queue's
    visibility timeout (longer than the worker's), and the receives before a message is dead."""

    worker_timeout_seconds: int
    visibility_timeout_seconds: int
    max_receives: int


@dataclass(frozen=True, slots=True)
class QueueWorker:
    queue: sqs.Queue
    dead_letter_queue: sqs.Queue
    worker: FhirFunction


def queue_worker(
    scope: Construct,
    *,
    queue_id: str,
    package: ServicePackage,
    code: lambda_.Code,
    layers: Sequence[lambda_.ILayerVersion],
    environment: Mapping[str, str],
    queue_url_variable: str,
    key: kms.IKey,
    limits: QueueLimits,
    description: str,
    memory_size: int,
    reserved_concurrency: int | None,
) -> QueueWorker:
    """One message at a time (batch size 1), failures reported per message; the worker finds the
    queue's URL in ``queue_url_variable`` to queue its next step."""
    dead_letters = dead_letter_queue(scope, "DeadLetters", key=key)
    queue = encrypted_queue(
        scope,
        queue_id,
        key=key,
        visibility_timeout=Duration.seconds(limits.visibility_timeout_seconds),
        dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=limits.max_receives, queue=dead_letters),
    )
    worker = FhirFunction(
        scope,
        "Worker",
        package=package,
        code=code,
        layers=layers,
        environment={**environment, queue_url_variable: queue.queue_url},
        key=key,
        description=description,
        memory_size=memory_size,
        timeout=Duration.seconds(limits.worker_timeout_seconds),
        reserved_concurrency=reserved_concurrency,
        invoked_by=INVOKED_BY_QUEUE,
    )
    worker.function.add_event_source(sources.SqsEventSource(queue, batch_size=1, report_batch_item_failures=True))
    return QueueWorker(queue=queue, dead_letter_queue=dead_letters, worker=worker)
