"""What the SDK client scripts share: the gateway they call and one JSON line per step.

A script runs its suite's steps in order; each prints one line on stdout,
`{"step": NAME, ...what the SDK gave back}`, or, when the step raised,
`{"step": NAME, "exception": CLASS, "status": HTTP status, "body": the error body the SDK
parsed, "message": ...}`, and the next step still runs. The Rust harness
(tests/sdk_clients.rs) reads these lines and asserts on them.

The environment names the call: FERROLITE_GATEWAY (the gateway's base URL, no /v1),
FERROLITE_KEY (the gateway's key, given to the SDK as its API key), FERROLITE_MODEL (the model
group).
"""

import json
import os
import sys
import traceback

GATEWAY = os.environ["FERROLITE_GATEWAY"]
KEY = os.environ["FERROLITE_KEY"]
MODEL = os.environ["FERROLITE_MODEL"]

# The tool every tool step offers; the scripted upstreams call it.
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


# A 1x1 PNG, for the image steps.
PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def prompt(step):
    """The user's message of `step`: the upstream fakes record requests by it."""
    return f"Say hello ({step})"


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}, default=str), flush=True)


def run(suites):
    """Runs the steps of the suite named by argv[1] (a dict name -> list of functions)."""
    suite = sys.argv[1]
    for function in suites[suite]:
        name = function.__name__
        try:
            emit(name, **function(name))
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next step runs
            emit(
                name,
                exception=type(e).__name__,
                status=getattr(e, "status_code", None),
                body=getattr(e, "body", None),
                message=str(e),
                traceback=traceback.format_exc(limit=3),
            )
