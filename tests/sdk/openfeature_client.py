"""Evaluates Sightline switches with the OpenFeature Python SDK and its OFREP provider,
as any OpenFeature app would.

usage: openfeature_client.py BASE_URL PROJECT_KEY
Prints one JSON object: the evaluation details per case.
"""

import json
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext

base_url, key = sys.argv[1], sys.argv[2]
api.set_provider(
    OFREPProvider(base_url, headers_factory=lambda: {"Authorization": f"Bearer {key}"})
)
client = api.get_client()


def details(flag, default, context):
    d = client.get_boolean_details(flag, default, context)
    if d.error_code is not None:
        return {"value": d.value, "error_code": str(d.error_code.value)}
    return {"value": d.value, "reason": str(d.reason.value), "variant": d.variant}


print(
    json.dumps(
        {
            "alice": details("search:v2", False, EvaluationContext("alice")),
            "bob": details("search:v2", False, EvaluationContext("bob")),
            "bob_pro": details(
                "search:v2", False, EvaluationContext("bob", {"plan": "pro"})
            ),
            "missing": details("no:such_switch", True, EvaluationContext("alice")),
        },
        sort_keys=True,
    )
)
