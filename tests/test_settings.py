"""Production refuses to start on unsafe settings; the env reader accepts *_FILE secrets."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PRODUCTION = {
    "APP_ENV": "production",
    "DEBUG": "false",
    "SECRET_KEY": "a-real-secret-key-for-this-test-only",
    "FIELD_ENCRYPTION_KEYS": "4Kk2SQCz6kzf6VwEfMSYLRwKrhAPC-O7KXA7Cjc8Ttw=",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/school_payments",
    "REDIS_URL": "redis://127.0.0.1:6379/15",
    "SCHOOL_API_BASE_URL": "https://directory.example.org",
    "SCHOOL_API_TOKEN": "token",
    "ALLOWED_HOSTS": "payments.example.org",
    "METRICS_BEARER_TOKEN": "metrics-token",
    "AWS_STORAGE_BUCKET_NAME": "school-payments-receipts",
}


def load_settings(expression="settings.DEBUG", **env):
    clean = {key: value for key, value in os.environ.items() if key not in PRODUCTION and not key.endswith("_FILE")}
    clean.update({key: value for key, value in env.items() if value is not None})
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); from django.conf import settings; print({expression})"],
        cwd=REPO,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
    )


def test_complete_production_settings_start():
    result = load_settings(**PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ({"DEBUG": "true"}, "DEBUG must be off"),
        ({"SECRET_KEY": None}, "SECRET_KEY must be set"),
        ({"FIELD_ENCRYPTION_KEYS": None}, "FIELD_ENCRYPTION_KEYS must be set"),
        ({"DATABASE_URL": None}, "DATABASE_URL must be set"),
        ({"SCHOOL_API_TOKEN": None}, "SCHOOL_API_BASE_URL and SCHOOL_API_TOKEN must be set"),
        ({"METRICS_BEARER_TOKEN": None}, "METRICS_BEARER_TOKEN must be set"),
        ({"AWS_STORAGE_BUCKET_NAME": None}, "AWS_STORAGE_BUCKET_NAME (or MEDIA_ROOT on a shared volume) must be set"),
    ],
)
def test_production_refuses_unsafe_settings(override, problem):
    result = load_settings(**{**PRODUCTION, **override})
    assert result.returncode != 0
    assert "Refusing to start in production" in result.stderr
    assert problem in result.stderr


def test_secrets_can_come_from_files(tmp_path):
    secret_file = tmp_path / "secret_key"
    secret_file.write_text("secret-from-a-mounted-file\n")
    env = {**PRODUCTION, "SECRET_KEY": None, "SECRET_KEY_FILE": str(secret_file)}
    result = load_settings("settings.SECRET_KEY", **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "secret-from-a-mounted-file"


def test_trusted_proxies_are_addresses_or_networks():
    result = load_settings("settings.TRUSTED_PROXIES", **PRODUCTION, TRUSTED_PROXIES="10.0.0.0/8, fd00::/8,192.0.2.1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['10.0.0.0/8', 'fd00::/8', '192.0.2.1']"
    result = load_settings(**PRODUCTION, TRUSTED_PROXIES="10.0.0.0/8,ingress.internal")
    assert result.returncode != 0
    assert "TRUSTED_PROXIES: 'ingress.internal' is not an IP address or CIDR network" in result.stderr


def test_production_receipts_go_to_the_configured_private_bucket():
    expression = "(settings.STORAGES['default']['BACKEND'], {k: v for k, v in settings.STORAGES['default']['OPTIONS'].items() if k != 'client_config'})"
    result = load_settings(
        expression, **PRODUCTION, AWS_S3_REGION_NAME="af-south-1", AWS_S3_PREFIX="/media/"
    )
    assert result.returncode == 0, result.stderr
    backend, options = eval(result.stdout)  # noqa: S307 - our own repr
    assert backend == "storages.backends.s3.S3Storage"
    assert options == {
        "bucket_name": "school-payments-receipts",
        "region_name": "af-south-1",
        "endpoint_url": None,
        "location": "media",
        "default_acl": None,
        "querystring_auth": True,
        "querystring_expire": 300,
        "file_overwrite": False,
    }
    timeouts = load_settings("settings.STORAGES['default']['OPTIONS']['client_config'].connect_timeout", **PRODUCTION)
    assert timeouts.stdout.strip() == "5"


def test_production_may_keep_receipts_on_a_shared_volume_instead(tmp_path):
    result = load_settings(
        "settings.STORAGES['default']['BACKEND']", **{**PRODUCTION, "AWS_STORAGE_BUCKET_NAME": None}, MEDIA_ROOT=str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "django.core.files.storage.FileSystemStorage"


def test_development_keeps_receipts_on_the_local_disk():
    result = load_settings("settings.STORAGES['default']['BACKEND']", APP_ENV="development")
    assert result.stdout.strip() == "django.core.files.storage.FileSystemStorage"
