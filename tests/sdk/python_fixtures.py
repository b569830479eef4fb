"""Writes the Python fixtures under tests/fixtures/sentry/ with the official sentry-sdk.

usage: python_fixtures.py OUT_DIR

A transport that writes each envelope the SDK would send to a file, byte for byte as
the SDK serialises it. Run once by hand when the fixtures need renewing; the tests read
the committed files, so they do not depend on this script or the SDK version.
"""

import sys
from pathlib import Path

import sentry_sdk
from sentry_sdk.integrations.wsgi import SentryWsgiMiddleware
from sentry_sdk.transport import Transport

out = Path(sys.argv[1])
written = []


class FileTransport(Transport):
    def capture_envelope(self, envelope):
        written.append(envelope.serialize())

    def flush(self, timeout, callback=None):
        pass


sentry_sdk.init(
    dsn="http://0123456789abcdef0123456789abcdef@127.0.0.1:7070/1",
    transport=FileTransport,
    release="shop@1.4.2",
    environment="production",
    server_name="web-1",
    traces_sample_rate=1.0,
    default_integrations=True,
)


def save(name):
    sentry_sdk.flush()
    assert written, f"nothing captured for {name}"
    (out / f"{name}.envelope").write_bytes(written.pop())
    written.clear()


class PaymentDeclined(Exception):
    pass


def charge(order_id, amount):
    sentry_sdk.add_breadcrumb(category="payment", message=f"charging order {order_id}", level="info")
    try:
        {"visa": 1}["amex"]
    except KeyError as e:
        raise PaymentDeclined(f"order {order_id}: card declined for {amount} EUR") from e


def checkout_app(environ, start_response):
    sentry_sdk.set_user({"id": "4711", "email": "ada@example.com"})
    sentry_sdk.add_breadcrumb(category="query", message="SELECT * FROM orders WHERE id = 981", level="info")
    charge(981, "12.50")
    start_response("200 OK", [])
    return [b"ok"]


environ = {
    "REQUEST_METHOD": "POST",
    "PATH_INFO": "/checkout/981",
    "QUERY_STRING": "step=pay&token=abc123",
    "SERVER_NAME": "shop.example.com",
    "SERVER_PORT": "443",
    "wsgi.url_scheme": "https",
    "HTTP_HOST": "shop.example.com",
    "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0",
    "HTTP_COOKIE": "sessionid=s3cr3t",
    "HTTP_AUTHORIZATION": "Bearer eyJhbGciOi",
    "REMOTE_ADDR": "203.0.113.7",
    "CONTENT_TYPE": "application/json",
    "wsgi.input": None,
}
app = SentryWsgiMiddleware(checkout_app)
try:
    app(environ, lambda *a: None)
except PaymentDeclined:
    pass
sentry_sdk.flush()
# The WSGI integration sends the error, then the transaction of the failed request.
errors = [e for e in written if b'"type":"event"' in e]
transactions = [e for e in written if b'"type":"transaction"' in e]
(out / "python_exception_chain.envelope").write_bytes(errors[0])
(out / "python_transaction.envelope").write_bytes(transactions[0])
written.clear()

sentry_sdk.capture_message("disk 91% full on 10.0.0.3", level="warning")
save("python_message")

sentry_sdk.start_session()
sentry_sdk.end_session()
save("python_session")

scope = sentry_sdk.get_current_scope()
scope.add_attachment(bytes=b"2024-03-01 12:00:00 worker started\n2024-03-01 12:00:01 job 7 failed\n", filename="worker.log", content_type="text/plain")
try:
    int("seven")
except ValueError:
    sentry_sdk.capture_exception()
save("python_event_with_attachment")
