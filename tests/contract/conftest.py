"""One behavioural suite per port, run against every adapter of that port (STYLE.md rule 9)."""

from tests.support.aws import fresh_tables, moto, shared_tables, tenant
from tests.support.dynamodb_local import dynamodb_local

__all__ = ["dynamodb_local", "fresh_tables", "moto", "shared_tables", "tenant"]
