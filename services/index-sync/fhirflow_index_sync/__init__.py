"""index-sync: the committed-change consumer (DESIGN.md §3).

In AWS a Lambda on the DynamoDB stream (``handler``); in the embedded mode the worker loop drains
the SQLite outbox into the same use case (``sync``).
"""
