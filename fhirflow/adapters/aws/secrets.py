"""``SecretsManagerSecret``: a secret the stack keeps in Secrets Manager rather than in the
Lambda environment (where anyone who may read the function's configuration reads it too).

Read on first use and kept for the life of the process (a Lambda container): one
``GetSecretValue`` per cold start at most, none for requests that never need it.
"""

from __future__ import annotations

import threading
from typing import Any

from fhirflow.adapters.aws import clients


class SecretsManagerSecret:
    def __init__(self, secret_id: str, *, region: str | None = None, client: Any = None) -> None:
        self.secret_id = secret_id
        self._region = region
        self._client = client
        self._value: bytes | None = None
        self._lock = threading.Lock()

    def read(self) -> bytes:
        """The secret's value (its string as UTF-8, or its binary)."""
        with self._lock:
            if self._value is None:
                client = self._client or clients.client("secretsmanager", region=self._region)
                with clients.translated("The secret store"):
                    reply = client.get_secret_value(SecretId=self.secret_id)
                text = reply.get("SecretString")
                self._value = text.encode() if isinstance(text, str) else bytes(reply["SecretBinary"])
            return self._value
