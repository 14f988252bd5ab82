"""Error reporting (Sentry): off unless SENTRY_DSN is set; when set, an unhandled error in a
request reaches the DSN's server with the request id and without secrets. The server is a local
HTTP server standing in for Sentry's ingestion endpoint; the real sentry-sdk sends to it."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.http import HttpResponse
from django.urls import path

from tests.conftest import REPO


def failing_view(request):
    raise RuntimeError("charging failed, api token=sk_live_should_not_leave")


def fine_view(request):
    return HttpResponse("fine")


urlpatterns = [path("fail", failing_view), path("fine", fine_view)]


class IngestServer:
    """Accepts envelopes as Sentry's /api/<project>/envelope/ does, and keeps them."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding == "br":
                    raise AssertionError("brotli: not expected without the brotli package")
                received.append((self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"id": "0"}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def events(self) -> list[dict]:
        """The event items of every envelope received (an envelope: header line, then item
        header and payload lines)."""
        events = []
        for _, _, body in self.requests:
            lines = body.split(b"\n")
            for header, payload in zip(lines[1::2], lines[2::2]):
                if json.loads(header).get("type") == "event":
                    events.append(json.loads(payload))
        return events

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ingest():
    server = IngestServer()
    yield server
    server.stop()


# A service process: Django set up from the settings, requests through the WSGI application
# gunicorn serves (config.wsgi), a failing view routed in.
SCRIPT = """
import io, json, sys
import django
django.setup()
from wsgiref.util import setup_testing_defaults
from django.test.utils import override_settings
from config.wsgi import application

def get(path, **headers):
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "HTTP_HOST": "testserver", "wsgi.errors": io.StringIO()}
    environ.update(headers)
    setup_testing_defaults(environ)
    status = []
    body = b"".join(application(environ, lambda s, h, exc_info=None: status.append(s)))
    return int(status[0].split()[0])

with override_settings(ROOT_URLCONF="tests.ops.test_errors", ALLOWED_HOSTS=["testserver"], DEBUG=False):
    fine = get("/fine")
    failed = get("/fail", HTTP_X_REQUEST_ID="req-sentry-1", HTTP_AUTHORIZATION="Bearer secret-bearer-value",
                 HTTP_COOKIE="sessionid=secret-session")
print(json.dumps({"fine": fine, "failed": failed, "sdk_loaded": "sentry_sdk" in sys.modules}))
if "sentry_sdk" in sys.modules:
    import sentry_sdk
    print(json.dumps({"active": sentry_sdk.get_client().is_active()}))
    sentry_sdk.flush(timeout=5)
"""


def run_service_process(**env) -> list[dict]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("SENTRY_")}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", "APP_ENV": "test", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_error_reporting_is_off_by_default(ingest, settings):
    assert settings.SENTRY_DSN == ""
    (outcome,) = run_service_process()
    assert outcome == {"fine": 200, "failed": 500, "sdk_loaded": False}
    assert ingest.requests == []


def test_an_unhandled_error_is_reported_with_its_request_id_and_without_secrets(ingest):
    dsn = f"http://publickey@127.0.0.1:{ingest.port}/42"
    outcome, client_state = run_service_process(SENTRY_DSN=dsn, SENTRY_ENVIRONMENT="staging", SENTRY_RELEASE="1.4.2")
    assert outcome == {"fine": 200, "failed": 500, "sdk_loaded": True}
    assert client_state == {"active": True}
    assert ingest.requests and all(path == "/api/42/envelope/" for path, _, _ in ingest.requests)
    assert all("sentry_key=publickey" in headers.get("X-Sentry-Auth", "") for _, headers, _ in ingest.requests)
    errors = [event for event in ingest.events() if event.get("exception")]
    assert len(errors) == 1, ingest.events()  # the failed request only
    (event,) = errors
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    assert exception["value"] == "charging failed, api token=[REDACTED]"
    assert event["tags"]["request_id"] == "req-sentry-1"
    assert event["environment"] == "staging" and event["release"] == "1.4.2"
    assert event["request"]["url"] == "http://testserver/fail" and event["request"]["method"] == "GET"
    headers = event["request"]["headers"]
    assert headers["X-Request-Id"] == "req-sentry-1"
    assert headers.get("Authorization", "[REDACTED]") == headers.get("Cookie", "[REDACTED]") == "[REDACTED]"
    everything = b"".join(body for _, _, body in ingest.requests).decode()
    for secret in ("sk_live_should_not_leave", "secret-bearer-value", "secret-session"):
        assert secret not in everything
    # No local variables leave the process.
    assert all("vars" not in frame for frame in exception["stacktrace"]["frames"])
