"""``DynamoDbExportJobStore``: bulk export jobs as items of the resource table (docs/dynamodb.md).

One item per job: ``pk = xj#{tenant}#{jobId}``, ``sk = export``, the job's JSON in ``doc`` and its
revision in ``rev``. The item is neither a head nor a version, so index-sync skips its stream
records (and the Lambda event filter, which passes only ``v#`` sort keys, never delivers them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from fhirflow.adapters.aws import clients
from fhirflow.adapters.aws.items import escape_tenant

if TYPE_CHECKING:
    from fhirflow_contracts import ExportJob

JOB_PREFIX = "xj#"
JOB_SK = "export"
DOC, REVISION = "doc", "rev"


def job_key(tenant: str, job_id: str) -> dict[str, Any]:
    # Resource pks start with the (escaped) tenant, which can hold no '#': none starts with "xj#"
    # followed by a tenant and a job id *and* has the sort key "export".
    return {"pk": {"S": f"{JOB_PREFIX}{escape_tenant(tenant)}#{job_id}"}, "sk": {"S": JOB_SK}}


class DynamoDbExportJobStore:
    def __init__(
        self, table: str, *, client: Any = None, endpoint_url: str | None = None, region: str | None = None
    ) -> None:
        self.table = table
        self.client = client or clients.lazy_client("dynamodb", endpoint_url=endpoint_url, region=region)

    def _item(self, job: ExportJob) -> dict[str, Any]:
        return {**job_key(job.tenant, job.id), DOC: {"S": job.to_json()}, REVISION: {"N": str(job.revision)}}

    def create(self, job: ExportJob) -> None:
        with clients.translated("The export job store"):
            self.client.put_item(
                TableName=self.table, Item=self._item(job), ConditionExpression="attribute_not_exists(pk)"
            )

    def get(self, tenant: str, job_id: str) -> ExportJob | None:
        from fhirflow_contracts import ExportJob

        with clients.translated("The export job store"):
            reply = self.client.get_item(TableName=self.table, Key=job_key(tenant, job_id), ConsistentRead=True)
        item = reply.get("Item")
        return None if item is None else ExportJob.from_json(item[DOC]["S"])

    def replace(self, job: ExportJob) -> ExportJob | None:
        stored = job.model_copy(update={"revision": job.revision + 1})
        try:
            with clients.translated("The export job store"):
                self.client.put_item(
                    TableName=self.table,
                    Item=self._item(stored),
                    ConditionExpression="#rev = :expected",
                    ExpressionAttributeNames={"#rev": REVISION},
                    ExpressionAttributeValues={":expected": {"N": str(job.revision)}},
                )
        except ClientError as exc:
            if clients.error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return stored
