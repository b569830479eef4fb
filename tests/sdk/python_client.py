"""Reports to Sightline with the official sentry-sdk, as any Python app would.

usage: python_client.py DSN COMPRESSION   (COMPRESSION: gzip | br | none)
Prints one JSON object: the event ids the SDK returned, by kind.

Besides the error and message events it sends what a real app's SDK sends along: a
transaction (traces_sample_rate=1), a release-health session, and a client report
(one event is dropped by before_send, which the SDK reports on flush).
"""

import json
import sys

import sentry_sdk

dsn, algo = sys.argv[1], sys.argv[2]
experiments = {}
if algo == "none":
    experiments["transport_compression_level"] = 0
else:
    experiments["transport_compression_algo"] = algo
    experiments["transport_compression_level"] = 6


def before_send(event, hint):
    # Dropped on purpose: the SDK counts it and sends a client_report item.
    if event.get("tags", {}).get("drop") == "yes":
        return None
    return event


sentry_sdk.init(
    dsn=dsn,
    release="shop@1.4.2",
    environment="staging",
    traces_sample_rate=1.0,
    send_default_pii=False,
    before_send=before_send,
    _experiments=experiments,
)
sentry_sdk.set_tag("checkout_flow", "v2")


def lookup_user(user_id):
    raise LookupError(f"user {user_id} not found")


def parse_payload(raw):
    raise ValueError(f"bad payload {raw!r} at byte {len(raw)}")


ids = {"lookup": [], "parse": [], "message": []}
sentry_sdk.start_session()
with sentry_sdk.start_transaction(op="task", name="report-errors"):
    for user_id in (1234, 98, 7):
        sentry_sdk.set_user({"id": str(user_id)})
        try:
            lookup_user(user_id)
        except LookupError:
            ids["lookup"].append(sentry_sdk.capture_exception())
    sentry_sdk.set_user(None)
    for raw in ("{", "[1,"):
        try:
            parse_payload(raw)
        except ValueError:
            ids["parse"].append(sentry_sdk.capture_exception())
    ids["message"].append(sentry_sdk.capture_message("disk 91% full on 10.0.0.3", level="warning"))
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("drop", "yes")
        sentry_sdk.capture_message("dropped by before_send")
sentry_sdk.end_session()

sentry_sdk.flush(timeout=15)
# What the transport really used (None: uncompressed), so a silent fallback shows.
transport = sentry_sdk.get_client().transport
ids["compression"] = None if transport._compression_level == 0 else transport._compression_algo
print(json.dumps(ids))
