"""JSON logs with a request id, carried into Celery tasks; secrets never logged."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest
from celery import shared_task
from django.http import JsonResponse
from django.test import override_settings
from django.urls import path
from pythonjsonlogger.json import JsonFormatter

from config.celery import publish
from ops.context import current_request_id
from ops.logs import REDACTED, RedactSecretsFilter, RequestContextFilter, json_formatter_config, redact_text
from tests.conftest import REPO, wait_for

logger = logging.getLogger("tests.ops.logging")
SEEN_BY_TASK: list[tuple[str | None, str]] = []


@shared_task(name="tests.ops.record_request_id")
def record_request_id_task(label: str) -> None:
    SEEN_BY_TASK.append((current_request_id(), label))
    logger.warning("task %s ran", label)


def logging_view(request):
    logger.warning(
        "charging %s with %s",
        "card",
        {"api_key": "sk_live_abc123", "amount": 5},
        extra={"headers": {"X-Signature": "deadbeef", "X-School-Code": "ng"}, "account": 7},
    )
    return JsonResponse({"request_id": current_request_id()})


def enqueue_view(request):
    publish(record_request_id_task, (request.GET["label"],))
    return JsonResponse({})


urlpatterns = [path("log", logging_view), path("enqueue", enqueue_view)]


@pytest.fixture
def json_lines():
    """Records of the ``tests.ops.logging`` logger, formatted as the service's JSON handler
    formats them (same formatter configuration and filters)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    config = {key: value for key, value in json_formatter_config().items() if key != "()"}
    handler.setFormatter(JsonFormatter(**config))
    handler.addFilter(RequestContextFilter())
    handler.addFilter(RedactSecretsFilter())
    logger.addHandler(handler)
    # Another test's logging set-up (a Celery worker's) may have disabled or raised it.
    disabled, level = logger.disabled, logger.level
    logger.disabled = False
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.disabled, logger.level = disabled, level


@override_settings(ROOT_URLCONF=__name__)
def test_request_id_from_the_caller_is_in_logs_and_response(client, json_lines):
    response = client.get("/log", HTTP_X_REQUEST_ID="req-123.abc")
    assert response["X-Request-ID"] == "req-123.abc"
    assert response.json() == {"request_id": "req-123.abc"}
    (line,) = json_lines()
    assert line["request_id"] == "req-123.abc"
    assert {"time", "level", "logger", "message"} <= set(line)
    assert line["level"] == "WARNING" and line["logger"] == "tests.ops.logging"
    assert current_request_id() is None  # nothing leaks past the request


@override_settings(ROOT_URLCONF=__name__)
@pytest.mark.parametrize("given", [None, "", "x" * 200, "bad id\nwith newline", "<script>"])
def test_request_id_is_generated_when_missing_or_unusable(client, given):
    extra = {} if given is None else {"HTTP_X_REQUEST_ID": given}
    response = client.get("/log", **extra)
    generated = response["X-Request-ID"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert response.json()["request_id"] == generated
    assert client.get("/log", **extra)["X-Request-ID"] != generated  # one per request


@override_settings(ROOT_URLCONF=__name__)
def test_secrets_in_a_request_log_line_are_redacted(client, json_lines):
    client.get("/log")
    (line,) = json_lines()
    serialized = json.dumps(line)
    assert "sk_live_abc123" not in serialized and "deadbeef" not in serialized
    assert line["message"] == f"charging card with {{'api_key': '{REDACTED}', 'amount': 5}}"
    assert line["headers"] == {"X-Signature": REDACTED, "X-School-Code": "ng"}
    assert line["account"] == 7


def make_record(msg, args=(), exc_info=None, **extra):
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    RedactSecretsFilter().filter(record)
    return record


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("headers={'X-Signature': 'a1b2c3d4e5'}", "a1b2c3d4e5"),
        ('{"Stripe-Signature": "t=1,v1=f00ba4"}', "f00ba4"),
        ("verif-hash: flw-secret-hash", "flw-secret-hash"),
        ("x-paystack-signature=abcdef012345", "abcdef012345"),
        ("connecting to postgres://app:pa55word@db:5432/sp", "pa55word"),
        ("SCHOOL_API_TOKEN=tok-987 SECRET_KEY=django-secret", "tok-987"),
        ("SCHOOL_API_TOKEN=tok-987 SECRET_KEY=django-secret", "django-secret"),
        ("client_secret=qbo-client-secret&grant_type=x", "qbo-client-secret"),
        ("refresh_token: AB11-refresh", "AB11-refresh"),
        ("curl -u x -H 'Authorization: Basic dXNlcjpwYXNzd29yZA=='", "dXNlcjpwYXNzd29yZA"),
        ("M-Pesa passkey=bfb279f9aa9bdbcf", "bfb279f9aa9bdbcf"),
    ],
)
def test_redaction_of_secrets_in_text(text, secret):
    assert secret not in make_record(text).getMessage()
    assert secret not in make_record("%s", (text,)).getMessage()


def test_redaction_keeps_what_is_not_secret():
    message = make_record("event %s for school %s: status=%s amount=%s", ("evt-1", "ng", "SUCCEEDED", "100,000")).getMessage()
    assert message == "event evt-1 for school ng: status=SUCCEEDED amount=100,000"
    assert redact_text("reason=signature_invalid") == "reason=signature_invalid"


def test_redaction_of_extra_fields_and_nested_values():
    record = make_record(
        "stored",
        headers={"Authorization": "Bearer abc", "Content-Type": "application/json"},
        credentials={"consumer_key": "k", "passkey": "p"},
        api_key="sk_test_1",
        payload={"items": [{"password": "x"}, "plain"]},
    )
    assert record.headers == {"Authorization": REDACTED, "Content-Type": "application/json"}
    assert record.credentials == REDACTED
    assert record.api_key == REDACTED
    assert record.payload == {"items": [{"password": REDACTED}, "plain"]}


def test_redaction_of_tracebacks():
    try:
        raise ValueError("bad webhook secret=whsec_123456 from provider")
    except ValueError:
        record = make_record("failed", exc_info=sys.exc_info())
    assert record.exc_info is None
    assert "whsec_123456" not in record.exc_text and "ValueError" in record.exc_text
    formatted = logging.Formatter().format(record)
    assert "whsec_123456" not in formatted and "Traceback" in formatted


def test_the_configured_logging_is_json_with_redaction():
    """The settings' LOGGING, as a production process sets it up."""
    script = (
        "import django, logging; django.setup();"
        "from ops.context import request_id_var; request_id_var.set('rid-42');"
        "logging.getLogger('payments').warning('calling %s', 'https://x/?token=abc123', extra={'stripe_signature': 'sig'});"
        "logging.getLogger('payments').info('an INFO line %s', 'too')"
    )
    env = {key: value for key, value in os.environ.items() if key not in {"LOG_FORMAT", "LOG_LEVEL"}}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", APP_ENV="test", LOG_FORMAT="json")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert len(lines) == 2, result.stderr
    first = lines[0]
    assert first["request_id"] == "rid-42"
    assert first["message"] == "calling https://x/?[query]"
    assert first["stripe_signature"] == REDACTED
    assert first["level"] == "WARNING" and first["logger"] == "payments"


@override_settings(ROOT_URLCONF=__name__)
def test_request_id_travels_into_the_celery_task(client, celery_worker, settings):
    SEEN_BY_TASK.clear()
    assert client.get("/enqueue?label=first", HTTP_X_REQUEST_ID="req-into-task").status_code == 200
    wait_for(lambda: len(SEEN_BY_TASK) == 1)
    assert SEEN_BY_TASK[0] == ("req-into-task", "first")
    # Published outside any request (beat, the batch publisher): the task's own id, not the
    # previous task's request id.
    publish(record_request_id_task, ("second",))
    wait_for(lambda: len(SEEN_BY_TASK) == 2)
    request_id, label = SEEN_BY_TASK[1]
    assert label == "second" and request_id not in (None, "req-into-task")


@override_settings(ROOT_URLCONF=__name__)
def test_inline_tasks_keep_the_requests_id(client, settings):
    from config.celery import app

    SEEN_BY_TASK.clear()
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        response = client.get("/enqueue?label=inline", HTTP_X_REQUEST_ID="req-inline")
    finally:
        app.conf.task_always_eager = previous
    assert response["X-Request-ID"] == "req-inline"
    assert SEEN_BY_TASK == [("req-inline", "inline")]


def test_each_webhook_is_processed_under_the_id_of_the_request_that_stored_it(
    client, account, fake_directory, celery_worker, monkeypatch
):
    """The request path hands events to the worker in batches (one message for many requests,
    applied in one transaction): each event is still applied, and its follow-up work published,
    under its own request's id."""
    from tests.conftest import post_webhook, sign, surepay_body
    from webhooks import batches, services

    seen: dict[str, str | None] = {}
    apply = services.payment_event_apply

    def apply_and_note_the_request_id(**kwargs):
        seen[kwargs["event"].event_id] = current_request_id()
        return apply(**kwargs)

    # Both ways an event is applied: with the others of its message, or on its own.
    monkeypatch.setattr(batches, "payment_event_apply", apply_and_note_the_request_id)
    monkeypatch.setattr(services, "payment_event_apply", apply_and_note_the_request_id)
    for number in (1, 2):
        body = surepay_body(event_id=f"evt-rid-{number}", external_txn_id=f"txn-rid-{number}")
        response = post_webhook(client, body, signature=sign(body), **{"X-Request-ID": f"req-webhook-{number}"})
        assert response.status_code == 202
    services.EVENT_PUBLISHER.flush()
    wait_for(lambda: len(seen) == 2)
    assert seen == {"evt-rid-1": "req-webhook-1", "evt-rid-2": "req-webhook-2"}


@pytest.fixture
def request_log_records():
    """Records of Django's request loggers (the 4xx/5xx answer lines), through the service's
    filters, as the console handler receives them."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep()
    handler.addFilter(RequestContextFilter())
    handler.addFilter(RedactSecretsFilter())
    loggers = [logging.getLogger(name) for name in ("django.request", "django.security.DisallowedHost")]
    for item in loggers:
        item.addHandler(handler)
    yield records
    for item in loggers:
        item.removeHandler(handler)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "headers", "status", "message"),
    [
        ("/no/such/page", {}, 404, "Not Found: /no/such/page"),
        ("/api/webhooks/surepay", {}, 405, "Method Not Allowed: /api/webhooks/surepay"),
        ("/admin/login/", {"HTTP_HOST": "evil.example"}, 400, "Invalid HTTP_HOST header: 'evil.example'."),
    ],
)
def test_the_log_lines_of_4xx_answers_carry_the_request_id(client, request_log_records, path, headers, status, message):
    """Django writes them after the middleware has returned (or from inside it, for the host
    check): they still carry the id the response names."""
    response = client.get(path, HTTP_X_REQUEST_ID="req-4xx-1", **headers)
    assert response.status_code == status
    assert response["X-Request-ID"] == "req-4xx-1"
    lines = [record for record in request_log_records if record.getMessage().startswith(message)]
    assert lines, [record.getMessage() for record in request_log_records]
    assert {record.request_id for record in request_log_records} == {"req-4xx-1"}
    assert all(isinstance(record.request, str) for record in request_log_records)  # method and path only
