"""AWS adapters: DynamoDB (system of record, publication ledger), S3 (blobs), EventBridge (events).

Each adapter takes ``client=`` so tests and composition roots inject the boto3 client; boto3 is
imported by these modules only, and only when an AWS adapter is built (cold starts matter).
See docs/dynamodb.md for the table's keys, GSIs and access patterns.
"""
