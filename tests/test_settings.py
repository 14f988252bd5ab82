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
