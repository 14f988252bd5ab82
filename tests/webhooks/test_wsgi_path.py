"""The image's WSGI application (``config.wsgi``): providers' deliveries take the webhook path's
lean middleware, everything else the full stack. Called as gunicorn calls it, with a WSGI
environ, not through Django's test client (which builds its own handler)."""

import io
import json

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from config.wsgi import application
from payments.models import WebhookEvent
from tests.conftest import sign, surepay_body


def call(path: str, body: bytes = b"", *, method: str = "POST", host: str = "testserver", **headers) -> tuple[int, dict, bytes]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": host,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        **{"HTTP_" + name.upper(): value for name, value in headers.items()},
    }
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"], answer["headers"] = int(status.split()[0]), dict(response_headers)

    # As Django's test client does: the test's transaction must survive the request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        content = b"".join(application(environ, start_response))
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return answer["status"], answer["headers"], content


@pytest.mark.django_db
def test_a_delivery_takes_the_lean_path_and_is_stored(account):
    body = surepay_body()
    status, headers, content = call("/api/webhooks/surepay", body, x_school_code="ng", x_signature=sign(body))
    assert (status, json.loads(content)) == (202, {"detail": "Webhook accepted", "event_id": "evt-001", "status": "pending"})
    assert WebhookEvent.objects.get().external_event_id == "evt-001"
    # The request id (logs, tasks) is kept; nothing of the session, the user or the pages is.
    assert headers["X-Request-ID"]
    assert not {"Set-Cookie", "Vary", "X-Frame-Options", "Content-Security-Policy"} & set(headers)


@pytest.mark.django_db
def test_pages_keep_the_full_stack(account):
    status, headers, _ = call("/pay/no-such-token/", method="GET")
    assert status == 404
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Request-ID"]


@pytest.mark.django_db
def test_the_webhook_path_keeps_the_nul_guard_and_the_host_check(account):
    body = surepay_body()
    status, _, content = call("/api/webhooks/sure\x00pay", body, x_school_code="ng", x_signature=sign(body))
    assert (status, json.loads(content)) == (400, {"detail": "The address contains a NUL character.", "code": "bad_request"})
    status, _, _ = call("/api/webhooks/surepay", body, host="attacker.example", x_school_code="ng", x_signature=sign(body))
    assert status == 400
    assert not WebhookEvent.objects.exists()
