"""Integration tests: the real DynamoDB Local and moto (S3, EventBridge, SQS)."""

from tests.support.aws import fresh_tables, moto, shared_tables, tenant
from tests.support.dynamodb_local import dynamodb_local

__all__ = ["dynamodb_local", "fresh_tables", "moto", "shared_tables", "tenant"]
