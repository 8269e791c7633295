"""Test infrastructure shared by tests/contract and tests/integration (DynamoDB Local, moto)."""
