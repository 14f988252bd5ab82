"""/healthz, /readyz: answered for any Host (the kubelet probes a pod by its IP), readiness
really checks PostgreSQL and Redis, with short timeouts, and says what is wrong."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from django.db import connection


@pytest.fixture
def black_hole():
    """A port that accepts TCP connections and never says anything: a hung server."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_healthz_answers_without_io(client, settings):
    # No db fixture: pytest-django refuses any database access here. No Redis either.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/healthz", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_ok_when_database_and_redis_answer(client):
    response = client.get("/readyz", HTTP_HOST="10.1.2.3:8000")  # a pod IP, not in ALLOWED_HOSTS
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
    assert response["X-Request-ID"]


@pytest.mark.django_db
def test_other_paths_still_check_the_host(client):
    assert client.get("/admin/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400
    assert client.get("/admin/login/").status_code == 200


@pytest.mark.django_db
def test_readyz_503_when_redis_is_down(client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("ConnectionError")


@pytest.mark.django_db
def test_readyz_times_out_quickly_on_a_hung_redis(client, settings, black_hole):
    settings.REDIS_URL = f"redis://127.0.0.1:{black_hole}/0"
    settings.READINESS_TIMEOUT_SECONDS = 0.5
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    assert "Timeout" in response.json()["checks"]["redis"]


def _point_database_at(port: int):
    original = connection.settings_dict["PORT"]
    connection.settings_dict["PORT"] = port  # only the probe's copy connects with it
    return original


@pytest.mark.django_db
def test_readyz_503_when_the_database_refuses(client):
    original = _point_database_at(closed_port())
    try:
        response = client.get("/readyz")
    finally:
        connection.settings_dict["PORT"] = original
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"].startswith("OperationalError")
    assert checks["redis"] == "ok"


@pytest.mark.django_db
def test_readyz_times_out_quickly_on_a_hung_database(client, settings, black_hole):
    settings.READINESS_TIMEOUT_SECONDS = 1
    original = _point_database_at(black_hole)
    started = time.monotonic()
    try:
        response = client.get("/readyz")
    finally:
        connection.settings_dict["PORT"] = original
    assert time.monotonic() - started < 4
    assert response.status_code == 503
    assert "timeout" in response.json()["checks"]["database"].lower()


@pytest.mark.django_db
def test_readyz_never_shows_credentials(client, settings):
    settings.REDIS_URL = f"redis://:hunter2-password@127.0.0.1:{closed_port()}/0"
    original_password = connection.settings_dict["PASSWORD"]
    original = _point_database_at(closed_port())
    connection.settings_dict["PASSWORD"] = "hunter2-password"
    try:
        response = client.get("/readyz")
    finally:
        connection.settings_dict["PORT"] = original
        connection.settings_dict["PASSWORD"] = original_password
    assert response.status_code == 503
    assert "hunter2" not in response.content.decode()


def test_readyz_without_redis_configured_checks_the_database_only(client, settings, db):
    settings.REDIS_URL = None
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "not configured"}
