"""One cold-start sample, run by a fresh Python 3.12 as Lambda's runtime would (``bench.coldstart``).

    python3.12 -E -s -B coldstart_sample.py <spec.json>

Stand-alone on purpose (it imports nothing of the repo): ``sys.path`` holds only the packaged code
(``/var/task``), the layer (``/opt/python``) and the interpreter's own library, as in Lambda. Every
outgoing connection is refused and counted before anything is imported, so no network can be
timed: a sample that tried one says so and ``bench.coldstart`` fails it.

The spec names the code and layer folders, the module, the handler (absent: the baseline, which
creates one boto3 client instead) and the event. It prints one JSON line: import and first-call
seconds, the connections attempted, and the status the handler answered.
"""

import json
import socket
import sys
import time

_attempts = []
_stub_calls = []
_connect = socket.socket.connect
_stub = None


def _guarded(sock, address):
    if isinstance(address, tuple) and address[:2] == ("127.0.0.1", _stub):
        _stub_calls.append(address)
        return _connect(sock, address)
    _attempts.append(str(address))
    raise ConnectionRefusedError(111, "bench.coldstart: no network while measuring")


class _Context:
    """What Lambda passes as the context (Powertools' inject_lambda_context reads these)."""

    function_name = "fhirflow-coldstart"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:eu-central-1:123456789012:function:fhirflow-coldstart"
    memory_limit_in_mb = 1024
    aws_request_id = "c0ld5ta7-0000-4000-8000-000000000000"
    log_group_name = "/aws/lambda/fhirflow-coldstart"
    log_stream_name = "2026/12/06/[$LATEST]0000"

    @staticmethod
    def get_remaining_time_in_millis():
        return 28_000


def main():
    with open(sys.argv[1]) as file:
        spec = json.load(file)
    global _stub
    _stub = spec.get("stub_port")
    sys.path[:0] = [spec["code"], spec["layer"]]
    socket.socket.connect = _guarded
    started = time.perf_counter()
    module = __import__(spec["module"], fromlist=["_"])
    imported = time.perf_counter()
    status = None
    if spec.get("handler"):
        answer = getattr(module, spec["handler"])(spec["event"], _Context())
        status = answer.get("statusCode") if isinstance(answer, dict) else None
        if spec.get("show"):
            print(answer, file=sys.stderr)
        if isinstance(answer, dict) and "batchItemFailures" in answer:
            status = f"{len(answer['batchItemFailures'])} batch item failure(s)"
    else:
        module.client("s3", region_name="eu-central-1")
    served = time.perf_counter()
    result = {
        "import": imported - started,
        "first": served - imported,
        "status": status,
        "attempts": _attempts,
        "stub_calls": len(_stub_calls),
    }
    print(json.dumps(result))


main()
