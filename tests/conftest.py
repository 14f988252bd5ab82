import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.conf import settings

from config.celery import reset_broker_backoff
from fakes.directory import FakeDirectory
from fakes.server import serve_in_thread
from tests import fuzzing  # registers the hypothesis profiles (ci, fuzz)
from tests.factories import AccountFactory, SchoolFactory
from webhooks.selectors import account_cache_clear


def sign(body: bytes, secret: str = "sekret") -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def surepay_body(**overrides) -> bytes:
    payload = {
        "event_id": "evt-001",
        "external_txn_id": "txn-123",
        "amount": "100,000",
        "currency": "UGX",
        "status": "SUCCEEDED",
        "provider_student_id": "prov-001",
    }
    payload.update(overrides)
    payload = {key: value for key, value in payload.items() if value is not None}
    return json.dumps(payload).encode()


@pytest.fixture(autouse=True)
def _clean_broker():
    """Every test starts with an empty test Redis database and a broker marked up."""
    if settings.REDIS_URL:
        redis.Redis.from_url(settings.REDIS_URL).flushdb()
    reset_broker_backoff()
    account_cache_clear()
    yield
    from webhooks.services import EVENT_PUBLISHER

    EVENT_PUBLISHER.flush()  # nothing from this test may reach the next one's broker
    reset_broker_backoff()


@pytest.fixture(autouse=True)
def _deliveries_stored_together(request):
    """The request path's group commit (``webhooks.inbox``) never silently falls back to storing
    each delivery alone, unless a test says it expects to."""
    from prometheus_client import REGISTRY

    fallbacks = REGISTRY.get_sample_value("webhook_inbox_fallbacks_total")
    yield
    if "inbox_falls_back" not in request.keywords:
        assert REGISTRY.get_sample_value("webhook_inbox_fallbacks_total") == fallbacks


@pytest.fixture
def school(db):
    return SchoolFactory(code="ng", name="Nile Gardens School", currency="UGX")


@pytest.fixture
def account(school):
    return AccountFactory(school=school, provider="surepay", webhook_secret="sekret")


@pytest.fixture
def fake_directory(settings):
    directory = FakeDirectory(token="test-directory-token")
    server = serve_in_thread(directory)
    settings.SCHOOL_API_BASE_URL = server.base_url
    settings.SCHOOL_API_TOKEN = "test-directory-token"
    settings.SCHOOL_API_TIMEOUT_SECONDS = 1.0
    yield directory
    server.stop()


def post_webhook(client, body: bytes, *, provider="surepay", school_code="ng", signature=None, path_school=None, **headers):
    url = f"/api/webhooks/{provider}" + (f"/{path_school}" if path_school else "")
    extra = {}
    if school_code is not None:
        extra["HTTP_X_SCHOOL_CODE"] = school_code
    if signature is not None:
        extra["HTTP_X_SIGNATURE"] = signature
    for name, value in headers.items():
        extra["HTTP_" + name.upper().replace("-", "_")] = value
    return client.post(url, data=body, content_type="application/json", **extra)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll until ``predicate()`` is truthy (work done by another thread or process)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def celery_worker(transactional_db):
    """A real Celery worker (solo pool, in a thread) consuming the test Redis broker."""
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    app.loader.import_module("celery.contrib.testing.tasks")
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as worker:
        yield worker


def process_pending() -> list:
    """Process every stored, unprocessed event in this thread, as a worker would: including the
    work a worker's commits set off (``transaction.on_commit``), which a test's own wrapping
    transaction would otherwise hold back."""
    from django.test import TestCase

    from payments.models import WebhookEvent
    from webhooks.batches import webhook_events_process

    pending = WebhookEvent.objects.filter(status=WebhookEvent.Status.PENDING).order_by("pk")
    pending = list(pending.values_list("pk", flat=True))
    results = {}
    with TestCase.captureOnCommitCallbacks(execute=True):
        # In messages of a hundred, as the request path and the sweep publish them.
        for start in range(0, len(pending), 100):
            message = [(event_id, None) for event_id in pending[start : start + 100]]
            results.update(webhook_events_process(events=message))
    return [results[event_id] for event_id in pending]


def stored_at_once(deliveries: list, *, gathered: bool = True) -> tuple[list, list[int]]:
    """Call each of ``deliveries`` (functions storing one delivery, ``webhook_receive``) in its
    own thread with its own database connection, all at the same moment, as a gunicorn process's
    threads do. With ``gathered``, the first statement of the request path's group commit
    (``webhooks.inbox``) waits until every other delivery is queued behind it, so they are written
    together in the second. Returns what each call returned (or raised), in order, and the number
    of rows of each statement."""
    import threading
    import time

    from django.db import connection

    from webhooks import inbox

    statements, real_insert = [], inbox.events_insert

    def insert(rows):
        statements.append(len(rows))
        if gathered and len(statements) == 1:
            deadline = time.monotonic() + 10
            while len(inbox.EVENT_INBOX._queue) < len(deliveries) - 1 and time.monotonic() < deadline:
                time.sleep(0.005)
        return real_insert(rows)

    results = [None] * len(deliveries)
    start = threading.Barrier(len(deliveries))

    def deliver(index: int) -> None:
        try:
            start.wait()
            results[index] = deliveries[index]()
        except Exception as exc:  # asserted by the caller
            results[index] = exc
        finally:
            connection.close()

    inbox.events_insert = insert
    try:
        threads = [threading.Thread(target=deliver, args=(index,)) for index in range(len(deliveries))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        inbox.events_insert = real_insert
    return results, statements


REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def gunicorn_server(transactional_db):
    """Start this code under gunicorn, in its own process, on the test database: the way it runs
    in production. Returns a function taking the REDIS_URL to use; gives the base URL."""
    import httpx

    processes = []

    def start(*, redis_url: str = settings.REDIS_URL, image_config: bool = False) -> str:
        db = settings.DATABASES["default"]
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "REDIS_URL": redis_url,
            "APP_ENV": "test",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}",
             *(["-c", "config/gunicorn.conf.py"] if image_config else ["-w", "1"]), "--log-level", "warning"],
            cwd=REPO,
            env=env,
        )  # fmt: skip
        processes.append(process)
        base_url = f"http://127.0.0.1:{port}"

        def up():
            try:
                return httpx.get(f"{base_url}/api/webhooks/surepay", timeout=1).status_code == 405
            except httpx.TransportError:
                return False

        wait_for(up, timeout=20)
        return base_url

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def pytest_terminal_summary(terminalreporter):
    """The answers of the property-based tests, by surface and status (also in test-artifacts/)."""
    path = fuzzing.write_report()
    if path is None:
        return
    terminalreporter.section("hostile input: answers by status")
    for surface, answers in sorted(fuzzing.ANSWERS.items()):
        total = sum(n for status, n in answers.items() if isinstance(status, int))
        by_status = ", ".join(f"{status}: {n}" for status, n in sorted(answers.items(), key=str))
        terminalreporter.write_line(f"{surface:28} {total:6} requests  ({by_status})")
    terminalreporter.write_line(f"written to {path}")
