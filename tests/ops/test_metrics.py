"""/metrics: webhooks by provider and outcome, processing lag, QuickBooks counters, backlog
gauges from the database, the optional bearer token, multiprocess mode under gunicorn, and a
worker's own metrics port."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import httpx
import pytest
from celery import shared_task
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from config.metrics import QBO_REQUESTS, QBO_THROTTLED
from ops.metrics import database_gauges, worker_metrics_serve
from payments.models import WebhookEvent
from tests.conftest import REPO, free_port, post_webhook, process_pending, sign, surepay_body, wait_for
from tests.factories import AccountFactory, SchoolFactory


def webhooks_count(provider: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("webhooks_received_total", {"provider": provider, "outcome": outcome}) or 0.0


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture(autouse=True)
def _fresh_database_gauges(settings):
    settings.METRICS_DB_CACHE_SECONDS = 0
    database_gauges.clear()
    yield
    database_gauges.clear()


def test_webhooks_are_counted_by_provider_and_outcome(client, account, settings):
    before = {
        key: webhooks_count(*key)
        for key in [
            ("surepay", "accepted"),
            ("surepay", "duplicate"),
            ("surepay", "signature_invalid"),
            ("surepay", "invalid_payload"),
            ("surepay", "method_not_allowed"),
            ("surepay", "payload_too_large"),
            ("unknown", "unknown_provider"),
        ]
    }
    body = surepay_body()
    assert post_webhook(client, body, signature=sign(body)).status_code == 202
    assert post_webhook(client, body, signature=sign(body), provider="SUREPAY").status_code == 200
    assert post_webhook(client, body, signature="0" * 64).status_code == 401
    bad = surepay_body(event_id="evt-bad", amount="1,00")
    assert post_webhook(client, bad, signature=sign(bad)).status_code == 400
    assert client.get("/api/webhooks/surepay").status_code == 405
    huge = b"x" * (settings.WEBHOOK_MAX_BODY_BYTES + 1)
    assert post_webhook(client, huge, signature=sign(huge)).status_code == 413
    assert post_webhook(client, body, signature=sign(body), provider="no-such-provider").status_code == 404

    after = {key: webhooks_count(*key) for key in before}
    assert {key: after[key] - before[key] for key in before} == dict.fromkeys(before, 1.0)
    # An unknown slug from the path never becomes a label of its own.
    assert REGISTRY.get_sample_value("webhooks_received_total", {"provider": "no-such-provider", "outcome": "unknown_provider"}) is None


def test_processing_lag_is_observed_when_an_event_is_processed(client, account, fake_directory):
    def lag(name):
        return REGISTRY.get_sample_value(f"webhook_processing_lag_seconds_{name}", {"provider": "surepay"}) or 0.0

    count_before, sum_before = lag("count"), lag("sum")
    body = surepay_body()
    post_webhook(client, body, signature=sign(body))
    WebhookEvent.objects.update(received_at=WebhookEvent.objects.get().received_at - timedelta(seconds=30))
    assert process_pending() and WebhookEvent.objects.get().status == "processed"
    assert lag("count") - count_before == 1
    assert 30 <= lag("sum") - sum_before < 40
    # Processing it again (a redelivered task) observes nothing more.
    process_pending()
    assert lag("count") - count_before == 1


@pytest.mark.django_db
def test_metrics_page_has_every_metric_family(client):
    QBO_REQUESTS.labels("ok").inc()
    QBO_THROTTLED.labels("limiter").inc()
    response = client.get("/metrics", HTTP_HOST="10.1.2.3:8000")  # Prometheus scrapes the pod IP
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert {
        "webhooks_received",
        "webhook_processing_lag_seconds",
        "qbo_requests",
        "qbo_throttled",
        "metrics_database_up",
        "webhook_events_unfinished",
        "webhook_events_oldest_unfinished_age_seconds",
    } <= names
    text = response.content.decode()
    assert 'qbo_requests_total{outcome="ok"}' in text
    assert 'qbo_throttled_total{source="limiter"}' in text


def test_backlog_gauges_come_from_the_database(client, account):
    for number in range(3):
        body = surepay_body(event_id=f"evt-{number}", external_txn_id=f"txn-{number}")
        post_webhook(client, body, signature=sign(body))
    WebhookEvent.objects.filter(external_event_id="evt-0").update(status="processing")
    WebhookEvent.objects.filter(external_event_id="evt-1").update(
        received_at=WebhookEvent.objects.get(external_event_id="evt-1").received_at - timedelta(minutes=5)
    )
    values = samples(client.get("/metrics").content.decode())
    assert values[("metrics_database_up", ())] == 1
    assert values[("webhook_events_unfinished", (("status", "pending"),))] == 2
    assert values[("webhook_events_unfinished", (("status", "processing"),))] == 1
    assert 300 <= values[("webhook_events_oldest_unfinished_age_seconds", ())] < 330
    # Each stored event wrote its webhook.received outbox row; no relay has published them.
    assert values[("outbox_unpublished", ())] == 3
    assert 0 <= values[("outbox_oldest_unpublished_age_seconds", ())] < 60


def test_sync_backlog_counts_what_is_not_in_quickbooks_yet_by_status(client, db):
    from tests.factories import PaymentSyncFactory

    for status in ("pending", "pending", "paused", "failed", "synced"):
        PaymentSyncFactory(status=status)
    values = samples(client.get("/metrics").content.decode())
    assert values[("payments_sync_backlog", (("status", "pending"),))] == 2
    assert values[("payments_sync_backlog", (("status", "paused"),))] == 1
    assert values[("payments_sync_backlog", (("status", "failed"),))] == 1
    assert ("payments_sync_backlog", (("status", "synced"),)) not in values


def test_a_database_failure_does_not_break_the_scrape(client, db, monkeypatch):
    from ops import selectors

    def broken(**kwargs):
        raise RuntimeError("database is gone")

    monkeypatch.setattr(selectors, "backlog_read", broken)
    response = client.get("/metrics")
    assert response.status_code == 200
    values = samples(response.content.decode())
    assert values[("metrics_database_up", ())] == 0


@pytest.mark.django_db
def test_bearer_token_protects_metrics_when_set(client, settings):
    settings.METRICS_BEARER_TOKEN = "scrape-token"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token")
    assert response.status_code == 200 and b"webhooks_received_total" in response.content


def test_worker_metrics_port_serves_metrics_and_healthz():
    from config.metrics import webhook_processed

    port = free_port()
    server = worker_metrics_serve(port=port, host="127.0.0.1", token="worker-token")
    try:
        webhook_processed("dummy", 1.5)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{base}/metrics").status_code == 401
        response = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer worker-token"})
        assert response.status_code == 200
        assert 'webhook_processing_lag_seconds_count{provider="dummy"}' in response.text
        assert "webhook_events_unfinished" not in response.text  # the web pods report the database gauges
        assert httpx.get(f"{base}/other").status_code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_multiprocess_mode_adds_up_every_gunicorn_worker(transactional_db, tmp_path, settings):
    """Two gunicorn workers with PROMETHEUS_MULTIPROC_DIR: whichever worker answers a scrape,
    the totals are those of both, and they survive a worker's restart."""
    school = SchoolFactory(code="ng")
    AccountFactory(school=school, provider="surepay", webhook_secret="sekret")
    db = settings.DATABASES["default"]
    port = free_port()
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"left over from an earlier run")
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "APP_ENV": "test",
        "PORT": str(port),
        "GUNICORN_WORKERS": "2",
        "GUNICORN_THREADS": "2",
        "GUNICORN_KEEPALIVE": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "METRICS_DB_CACHE_SECONDS": "0",
        "LOG_LEVEL": "WARNING",
        "GUNICORN_LOGLEVEL": "warning",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "-c", "config/gunicorn.conf.py"], cwd=REPO, env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up():
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=30)
        sent = 0

        def counting_processes() -> set[str]:
            return {path.name.rsplit("_", 1)[1].split(".")[0] for path in metrics_dir.glob("counter_*.db")}

        # New connections until both workers have answered some (bounded).
        while sent < 12 or (len(counting_processes()) < 2 and sent < 200):
            body = surepay_body(event_id=f"mp-{sent}", external_txn_id=f"mp-{sent}")
            headers = {"X-School-Code": "ng", "X-Signature": sign(body), "Content-Type": "application/json", "Connection": "close"}
            assert httpx.post(f"{base}/api/webhooks/surepay", content=body, headers=headers).status_code == 202
            sent += 1
        pids = counting_processes()
        assert "999999" not in pids  # the master emptied the directory when it started
        assert len(pids) == 2, pids  # both workers counted some of the webhooks

        key = ("webhooks_received_total", (("outcome", "accepted"), ("provider", "surepay")))
        http_key = ("http_requests_total", (("method", "POST"), ("route", "api/webhooks/<provider>"), ("status", "202")))
        latency_key = ("http_request_duration_seconds_count", (("method", "POST"), ("route", "api/webhooks/<provider>")))
        for _ in range(6):
            values = samples(httpx.get(f"{base}/metrics", headers={"Connection": "close"}).text)
            assert values[key] == sent  # every scrape, whichever worker answered it
            assert values[http_key] == values[latency_key] == sent
            assert values[("db_query_duration_seconds_count", (("alias", "default"),))] >= sent
            unfinished = sum(v for (name, _), v in values.items() if name == "webhook_events_unfinished")
            assert unfinished == sent  # no worker runs here: all still waiting
    finally:
        process.terminate()
        process.wait(timeout=20)


# --- HTTP, database and Celery metrics -----------------------------------------------------------


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.django_db
def test_http_requests_are_counted_and_timed_by_route_and_status(client, account):
    def http(method, route, status):
        return sample("http_requests_total", method=method, route=route, status=str(status))

    def timed(method, route):
        return sample("http_request_duration_seconds_count", method=method, route=route)

    keys = [
        ("GET", "healthz", 200),
        ("POST", "api/webhooks/<provider>/<school_code>", 202),
        ("POST", "api/webhooks/<provider>/<school_code>", 401),
        ("GET", "pay/<str:token>/", 404),
        ("GET", "unmatched", 404),
        ("GET", "unmatched", 400),  # refused by the host check, before any routing
    ]
    before = {key: http(*key) for key in keys}
    timed_before = timed("POST", "api/webhooks/<provider>/<school_code>")
    assert client.get("/healthz").status_code == 200
    body = surepay_body()
    assert post_webhook(client, body, signature=sign(body), path_school="ng", school_code=None).status_code == 202
    assert post_webhook(client, body, signature="0" * 64, path_school="ng", school_code=None).status_code == 401
    assert client.get("/pay/no-such-token/").status_code == 404
    assert client.get("/wp-login.php").status_code == 404
    assert client.get("/admin/login/", HTTP_HOST="evil.example").status_code == 400
    assert {key: http(*key) - before[key] for key in keys} == dict.fromkeys(keys, 1.0)
    assert timed("POST", "api/webhooks/<provider>/<school_code>") - timed_before == 2
    assert sample("http_request_duration_seconds_sum", method="GET", route="healthz") > 0


@pytest.mark.django_db
def test_http_labels_stay_bounded_whatever_is_requested(client):
    before = sample("http_requests_total", method="other", route="unmatched", status="404")
    for index in range(5):
        client.generic("BREW", f"/coffee-{index}/pot")
    assert sample("http_requests_total", method="other", route="unmatched", status="404") - before == 5
    routes = {labels for labels in _http_label_sets()}
    assert not any("coffee" in route or "BREW" in method for method, route, _ in routes)


def _http_label_sets():
    for family in REGISTRY.collect():
        if family.name == "http_requests":
            for item in family.samples:
                if item.name == "http_requests_total":
                    yield item.labels["method"], item.labels["route"], item.labels["status"]


@pytest.mark.django_db
def test_database_queries_are_timed_and_failures_counted(school):
    from django.db import IntegrityError, transaction

    from payments.models import School

    queries_before = sample("db_query_duration_seconds_count", alias="default")
    errors_before = sample("db_query_errors_total", alias="default", error="IntegrityError")
    assert School.objects.filter(code="ng").count() == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        School.objects.create(code="ng", name="Twice", currency="UGX")
    assert sample("db_query_errors_total", alias="default", error="IntegrityError") - errors_before == 1
    # The count, the failed insert, and the savepoint statements around it.
    assert sample("db_query_duration_seconds_count", alias="default") - queries_before >= 2


def test_a_connection_opened_inside_an_execute_wrapper_block_keeps_that_blocks_wrapper(transactional_db):
    """The metrics wrapper is installed when a connection opens, possibly inside someone's
    ``execute_wrapper`` block: leaving the block must remove that block's wrapper, not ours."""
    from django.db import connection

    from ops.db import query_observed

    connection.close()
    seen = []

    def spy(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        with connection.cursor() as cursor:  # opens the connection
            cursor.execute("SELECT 1")
    assert connection.execute_wrappers == [query_observed]
    assert seen and seen[-1] == "SELECT 1"


@shared_task(name="tests.ops.metrics_ok")
def metrics_ok_task() -> str:
    return "ok"


@shared_task(name="tests.ops.metrics_fails")
def metrics_fails_task() -> None:
    raise RuntimeError("this task fails on purpose")


@shared_task(name="tests.ops.metrics_retries", bind=True, max_retries=1)
def metrics_retries_task(self) -> None:
    raise self.retry(countdown=0)


def test_celery_task_runs_are_counted_by_outcome_and_timed(celery_worker):
    from config.celery import publish

    def runs(task, outcome):
        return sample("celery_tasks_total", task=task, outcome=outcome)

    keys = [
        ("tests.ops.metrics_ok", "success"),
        ("tests.ops.metrics_fails", "failure"),
        ("tests.ops.metrics_retries", "retry"),
        ("tests.ops.metrics_retries", "failure"),
    ]
    before = {key: runs(*key) for key in keys}
    timed_before = sample("celery_task_duration_seconds_count", task="tests.ops.metrics_ok")
    for task in (metrics_ok_task, metrics_fails_task, metrics_retries_task):
        assert publish(task, ())
    # The retried task runs twice: once retried, then (out of retries) failed.
    wait_for(lambda: all(runs(*key) - before[key] >= 1 for key in keys), timeout=20)
    assert {key: runs(*key) - before[key] for key in keys} == dict.fromkeys(keys, 1.0)
    assert sample("celery_task_duration_seconds_count", task="tests.ops.metrics_ok") - timed_before == 1
