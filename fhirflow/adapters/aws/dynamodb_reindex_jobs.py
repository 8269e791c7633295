"""``DynamoDbReindexJobStore``: ``$reindex`` jobs as items of the resource table (docs/dynamodb.md).

One item per job: ``pk = rj#{tenant}#{jobId}``, ``sk = reindex``; ``doc`` the job's JSON
(:class:`fhirflow.reindex_ports.ReindexJob`), ``rev`` its revision, ``st`` its status, ``w`` and
``lu`` the worker holding its lease and until when (ms). While the job is open (queued or
running) it also carries ``ox = reindex`` and ``ot = created``: it is then in the sparse
``open-transactions`` GSI under a partition of its own (the sweeper queries ``ox = open`` and
never meets it), which is how a worker finds open jobs, oldest first, without a scan.

A claim is a conditional UpdateItem (open, and the lease expired or already the worker's); a save
is conditional on the revision read and the worker's lease, as in the SQLite store.
"""

from __future__ import annotations

from typing import Any

import orjson
from botocore.exceptions import ClientError

from fhirflow.adapters.aws import clients, items
from fhirflow.adapters.aws.items import escape_tenant
from fhirflow.reindex_ports import ReindexJob

JOB_PREFIX = "rj#"
JOB_SK = "reindex"
OPEN_PARTITION = "reindex"
"""``ox`` of an open job (the sweeper's transactions use ``open``)."""
DOC, REVISION, STATUS, WORKER, LEASE = "doc", "rev", "st", "w", "lu"
_OPEN = ("queued", "running")
_CANDIDATES = 10


def job_key(tenant: str, job_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"{JOB_PREFIX}{escape_tenant(tenant)}#{job_id}"}, "sk": {"S": JOB_SK}}


def _job(item: dict[str, Any]) -> ReindexJob:
    return ReindexJob.from_json(orjson.loads(item[DOC]["S"]))


class DynamoDbReindexJobStore:
    """The :class:`fhirflow.reindex_ports.ReindexJobStore` of the AWS mode."""

    def __init__(
        self, table: str, *, client: Any = None, endpoint_url: str | None = None, region: str | None = None
    ) -> None:
        self.table = table
        self.client = client or clients.client("dynamodb", endpoint_url=endpoint_url, region=region)

    def create(self, job: ReindexJob) -> None:
        item = {
            **job_key(job.tenant, job.id),
            DOC: {"S": orjson.dumps(job.to_json()).decode()},
            REVISION: {"N": str(job.revision)},
            STATUS: {"S": job.status},
            LEASE: {"N": "0"},
            items.TX_OPEN: {"S": OPEN_PARTITION},
            items.TX_DUE: {"N": str(job.created_ms)},
        }
        with clients.translated("The reindex job store"):
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)")

    def get(self, tenant: str, job_id: str) -> ReindexJob | None:
        with clients.translated("The reindex job store"):
            reply = self.client.get_item(TableName=self.table, Key=job_key(tenant, job_id), ConsistentRead=True)
        item = reply.get("Item")
        return None if item is None else _job(item)

    def claim(self, worker: str, now_ms: int, lease_ms: int) -> ReindexJob | None:
        # The GSI is eventually consistent: a candidate may have finished meanwhile, which the
        # claim's condition on its status catches.
        with clients.translated("The reindex job store"):
            reply = self.client.query(
                TableName=self.table,
                IndexName=items.OPEN_INDEX,
                KeyConditionExpression="#open = :open",
                ExpressionAttributeNames={"#open": items.TX_OPEN},
                ExpressionAttributeValues={":open": {"S": OPEN_PARTITION}},
                Limit=_CANDIDATES,
            )
        for candidate in reply.get("Items", []):
            key = {"pk": candidate["pk"], "sk": candidate["sk"]}
            try:
                with clients.translated("The reindex job store"):
                    updated = self.client.update_item(
                        TableName=self.table,
                        Key=key,
                        UpdateExpression="SET #w = :w, #lu = :until",
                        ConditionExpression="#st IN (:queued, :running) AND (#lu < :now OR #w = :w)",
                        ExpressionAttributeNames={"#w": WORKER, "#lu": LEASE, "#st": STATUS},
                        ExpressionAttributeValues={
                            ":w": {"S": worker},
                            ":until": {"N": str(now_ms + lease_ms)},
                            ":now": {"N": str(now_ms)},
                            ":queued": {"S": _OPEN[0]},
                            ":running": {"S": _OPEN[1]},
                        },
                        ReturnValues="ALL_NEW",
                    )
            except ClientError as exc:
                if clients.error_code(exc) == "ConditionalCheckFailedException":
                    continue  # leased to another worker, or finished
                raise
            return _job(updated["Attributes"])
        return None

    def claim_job(self, tenant: str, job_id: str, revision: int, worker: str, now_ms: int, lease_ms: int) -> bool:
        try:
            with clients.translated("The reindex job store"):
                self.client.update_item(
                    TableName=self.table,
                    Key=job_key(tenant, job_id),
                    UpdateExpression="SET #w = :w, #lu = :until",
                    ConditionExpression="#rev = :rev AND #st IN (:queued, :running) AND (#lu < :now OR #w = :w)",
                    ExpressionAttributeNames={"#w": WORKER, "#lu": LEASE, "#st": STATUS, "#rev": REVISION},
                    ExpressionAttributeValues={
                        ":w": {"S": worker},
                        ":until": {"N": str(now_ms + lease_ms)},
                        ":now": {"N": str(now_ms)},
                        ":rev": {"N": str(revision)},
                        ":queued": {"S": _OPEN[0]},
                        ":running": {"S": _OPEN[1]},
                    },
                )
        except ClientError as exc:
            if clients.error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def save(self, job: ReindexJob, worker: str, lease_until_ms: int) -> ReindexJob | None:
        stored = ReindexJob.from_json({**job.to_json(), "revision": job.revision + 1})
        names = {"#doc": DOC, "#rev": REVISION, "#st": STATUS, "#lu": LEASE, "#w": WORKER}
        values: dict[str, Any] = {
            ":doc": {"S": orjson.dumps(stored.to_json()).decode()},
            ":rev": {"N": str(stored.revision)},
            ":st": {"S": stored.status},
            ":lu": {"N": str(lease_until_ms)},
            ":expected": {"N": str(job.revision)},
            ":w": {"S": worker},
        }
        update = "SET #doc = :doc, #rev = :rev, #st = :st, #lu = :lu"
        names.update({"#open": items.TX_OPEN, "#due": items.TX_DUE})
        if stored.status in _OPEN:
            update += ", #open = :open, #due = :due"
            values.update({":open": {"S": OPEN_PARTITION}, ":due": {"N": str(stored.created_ms)}})
        else:
            update += " REMOVE #open, #due"  # out of the GSI: no worker meets it again
        try:
            with clients.translated("The reindex job store"):
                self.client.update_item(
                    TableName=self.table,
                    Key=job_key(job.tenant, job.id),
                    UpdateExpression=update,
                    ConditionExpression="#rev = :expected AND #w = :w",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )
        except ClientError as exc:
            if clients.error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return stored
