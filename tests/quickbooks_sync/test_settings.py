"""QuickBooks settings: Intuit's hosts by default in production, https only there, the local
fake in development; the periodic jobs are scheduled and exist."""

from django.conf import settings
from django.utils.module_loading import import_string

from tests.test_settings import PRODUCTION, load_settings

SHOW = "settings.QBO_API_BASE_URL, settings.QBO_OAUTH_DISCOVERY_URL, settings.QBO_REDIRECT_URI, bool(settings.QBO_CLIENT_ID)"


def test_production_defaults_are_intuits_hosts_and_no_app_keys():
    result = load_settings(SHOW, **PRODUCTION, PUBLIC_BASE_URL="https://pay.example.org")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "https://quickbooks.api.intuit.com/v3 https://developer.intuit.com/.well-known/openid_configuration/ "
        "https://pay.example.org/qbo/callback/ False"
    )


def test_sandbox_hosts():
    result = load_settings(SHOW, **PRODUCTION, QBO_ENVIRONMENT="sandbox")
    assert result.stdout.split()[:2] == [
        "https://sandbox-quickbooks.api.intuit.com/v3",
        "https://developer.intuit.com/.well-known/openid_sandbox_configuration/",
    ]


def test_production_refuses_a_plain_http_quickbooks():
    result = load_settings(SHOW, **PRODUCTION, QBO_API_BASE_URL="http://127.0.0.1:8001/qbo/v3")
    assert result.returncode != 0
    assert "QBO_API_BASE_URL and QBO_OAUTH_DISCOVERY_URL must be https" in result.stderr


def test_development_points_at_the_local_fake():
    result = load_settings(
        SHOW + ", settings.QBO_SYNC_CONCURRENCY, __import__('os').environ.get('OAUTHLIB_INSECURE_TRANSPORT')",
        APP_ENV="development",
        FAKES_PORT="8123",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "http://127.0.0.1:8123/qbo/v3",
        "http://127.0.0.1:8123/qbo/.well-known/openid_configuration",
        "http://localhost:8000/qbo/callback/",
        "True",
        "1",  # SQLite: no parallel writers
        "1",
    ]


def test_the_periodic_jobs_are_scheduled():
    schedule = {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert schedule["quickbooks_sync.tasks.qbo_backlog_scan"] == 60
    assert schedule["quickbooks_sync.tasks.qbo_tokens_keepalive"] == 3600
    for name in ("qbo_backlog_scan", "qbo_tokens_keepalive", "qbo_school_sync"):
        task = import_string(f"quickbooks_sync.tasks.{name}_task")
        assert task.name == f"quickbooks_sync.tasks.{name}"
    # A message of the previous release's beat still finds the keepalive.
    old = import_string("quickbooks_sync.tasks.qbo_tokens_keepalive_under_its_old_name_task")
    assert old.name == "quickbooks_sync.tasks.qbo_tokens_refresh"
    assert import_string("quickbooks_sync.tasks.qbo_school_sync_task").acks_late
