"""The image itself, built from the Dockerfile and started, not only parsed.

podman builds it (``--isolation chroot``: no container runtime needed) on a local base made by
debootstrap with Debian's Python 3.11 (tools/local_image.py; no image registry is reachable
here), the way `make image` does. Containers cannot run on these machines, so each command is
the image's own, started from a mounted container of the image, in a chroot, as the image's
user, with the image's environment plus the settings a deployment gives it. It runs against the
machine's PostgreSQL (a database of its own) and Redis, and a local S3 server for the receipts.

Skipped, with the reason, where podman or debootstrap is missing (`.ci/run` installs both).
The first build bootstraps the base (about a minute, then cached) and installs the requirements;
later builds reuse podman's layer cache. Figures: test-artifacts/image/figures.json.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet
from django.conf import settings

from tests.conftest import free_port, wait_for
from tests.ops.conftest import REPO
from tests.s3 import ACCESS_KEY, REGION, SECRET_KEY
from tools import local_image

pytestmark = pytest.mark.image

TAG = "localhost/school-payments:test"
ARTIFACTS = REPO / "test-artifacts" / "image"
# What `check --deploy` may still say, and why each is right for this deployment.
ACCEPTED_DEPLOY_WARNINGS = {
    "security.W004",  # HSTS: set by the ingress that terminates TLS, or by the app where configured
    "security.W008",  # SSL redirect: the ingress redirects http to https; the pods only see http
}


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: podman's chroot build and starting the image in a chroot"
    for tool in ("podman", "unshare"):
        if not shutil.which(tool):
            return f"{tool} is not installed (Debian package {tool}; .ci/run installs it)"
    if not os.environ.get("PYTHON_IMAGE") and not shutil.which("debootstrap"):
        if subprocess.run(["podman", "image", "exists", local_image.base_image_ref()]).returncode != 0:
            return "debootstrap is not installed (Debian package debootstrap) and there is no local base image"
    return None


@pytest.fixture(scope="module")
def image():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    base_started = time.monotonic()
    base = os.environ.get("PYTHON_IMAGE") or local_image.base_image()
    base_seconds = time.monotonic() - base_started
    result = local_image.image_build(tag=TAG, python_image=base)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    figures = {
        "base_image": base,
        "base_seconds": round(base_seconds, 1),
        "build_seconds": round(result.seconds, 1),
        "image_bytes": result.size_bytes,
        "image_mb": round(result.size_bytes / 1e6),
    }
    (ARTIFACTS / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    return result


@pytest.fixture(scope="module")
def image_database():
    """A database of the image's own, migrated by the image's migrate command below."""
    db = settings.DATABASES["default"]
    name = f"{db['NAME']}_image"
    params = {"host": db["HOST"] or "127.0.0.1", "port": db["PORT"] or 5432, "user": db["USER"], "dbname": "postgres"}
    if db.get("PASSWORD"):
        params["password"] = db["PASSWORD"]
    with psycopg.connect(**params, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    yield f"postgres://{db['USER']}{password}@{params['host']}:{params['port']}/{name}"
    with psycopg.connect(**params, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def image_bucket(s3_server) -> str:
    name = f"image-receipts-{uuid.uuid4().hex[:8]}"
    s3_server.client().create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


@pytest.fixture(scope="module")
def deployment_env(image_database, s3_server, image_bucket) -> dict[str, str]:
    """What a deployment gives the image (k8s/base: the ConfigMap and the Secret); APP_ENV,
    LOG_FORMAT, SERVE_STATIC and the rest come from the image itself."""
    return {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": image_database,
        "REDIS_URL": settings.REDIS_URL,
        "ALLOWED_HOSTS": "payments.example.org",
        "PUBLIC_BASE_URL": "https://payments.example.org",
        "SCHOOL_API_BASE_URL": "https://directory.example.org/api",
        "SCHOOL_API_TOKEN": "directory-token",
        "METRICS_BEARER_TOKEN": "metrics-token",
        "TRUSTED_PROXIES": "10.0.0.0/8",
        "TIME_ZONE": "Africa/Kampala",
        "AWS_STORAGE_BUCKET_NAME": image_bucket,
        "AWS_S3_REGION_NAME": REGION,
        "AWS_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }


@pytest.fixture(scope="module")
def container(image):
    """The mounted root filesystem of a container of the image, and the image's configuration."""
    config = local_image.image_config(TAG)
    with local_image.mounted_container(TAG) as rootfs:
        yield rootfs, config


def run(container, argv, env, timeout=120) -> subprocess.CompletedProcess:
    rootfs, config = container
    process = local_image.start_in_image(rootfs, config, argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"{argv} did not finish in {timeout}s:\n{output[-3000:]}") from None
    return subprocess.CompletedProcess(argv, process.returncode, output, "")


@pytest.fixture(scope="module")
def migrated(container, deployment_env):
    result = run(container, ["python", "manage.py", "migrate", "--noinput"], deployment_env)
    assert result.returncode == 0, result.stdout[-3000:]
    return result


@pytest.fixture(scope="module")
def web(container, deployment_env, migrated):
    """The image's CMD (gunicorn) serving on a free port."""
    rootfs, config = container
    port = free_port()
    log_path = ARTIFACTS / "web.log"
    with log_path.open("w") as log:
        process = local_image.start_in_image(rootfs, config, None, env={**deployment_env, "PORT": str(port)}, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"

    def up():
        assert process.poll() is None, log_path.read_text()[-3000:]
        try:
            return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=60, interval=0.2)
        yield base_url, log_path
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_image_is_built_from_the_dockerfile(image):
    config = local_image.image_config(TAG)
    assert config.cmd == ["gunicorn", "config.wsgi", "--config", "config/gunicorn.conf.py"]
    assert config.user == "10001:10001" and config.workdir == "/app"
    assert config.env["APP_ENV"] == "production"
    assert image.size_bytes < 700_000_000, f"the image grew to {image.size_bytes / 1e6:.0f} MB"


def test_the_image_holds_exactly_the_runtime_requirements(container, deployment_env):
    script = "import importlib.metadata as m, json; print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"
    result = run(container, ["python", "-c", script], deployment_env)
    assert result.returncode == 0, result.stdout
    installed = {name.lower().replace("_", "-") for name in json.loads(result.stdout)}
    assert {"django", "drf-spectacular", "drf-spectacular-sidecar", "django-storages", "gunicorn"} <= installed
    assert not installed & {"pytest", "pytest-django", "factory-boy", "moto", "playwright"}


def test_it_runs_as_its_non_root_user_and_cannot_write_its_code(container, deployment_env):
    paths = ["/app", "/app/config", "/opt/venv", "/tmp", "/app/media"]
    script = f"import os; print(os.getuid(), os.getgid(), *[os.access(p, os.W_OK) for p in {paths!r}])"
    result = run(container, ["python", "-c", script], deployment_env)
    # /tmp (an emptyDir in Kubernetes) and the receipts folder of development (a compose volume).
    assert result.stdout.split() == ["10001", "10001", "False", "False", "False", "True", "True"]


def test_production_refuses_to_start_without_its_secrets(container, deployment_env):
    env = {key: value for key, value in deployment_env.items() if key not in {"SECRET_KEY", "METRICS_BEARER_TOKEN"}}
    result = run(container, ["python", "manage.py", "check"], env)
    assert result.returncode != 0
    assert "Refusing to start in production: SECRET_KEY must be set; METRICS_BEARER_TOKEN must be set" in result.stdout


def test_migrations_and_the_deploy_checks_pass(container, deployment_env, migrated):
    assert "Applying payments.0001_initial... OK" in migrated.stdout
    result = run(container, ["python", "manage.py", "check", "--deploy"], deployment_env)
    assert result.returncode == 0, result.stdout
    assert "ERRORS:" not in result.stdout
    warnings = set(re.findall(r"\(([a-z_]+\.W\d+)\)", result.stdout))
    assert warnings <= ACCEPTED_DEPLOY_WARNINGS, result.stdout
    (ARTIFACTS / "check-deploy.txt").write_text(result.stdout)


def test_the_web_command_serves_probes_static_files_and_metrics(web):
    base_url, log_path = web
    health = httpx.get(f"{base_url}/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = httpx.get(f"{base_url}/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "checks": {"database": "ok", "redis": "ok"}})
    # The admin's stylesheet and Swagger UI's, collected into the image and served by WhiteNoise,
    # through the ingress (which terminates TLS and says so: plain http is redirected to https).
    behind_ingress = {"Host": "payments.example.org", "X-Forwarded-Proto": "https"}
    css = httpx.get(f"{base_url}/static/admin/css/base.css", headers=behind_ingress)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert b"body" in css.content
    swagger = httpx.get(f"{base_url}/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js", headers=behind_ingress)
    plain = httpx.get(f"{base_url}/static/admin/css/base.css", headers={"Host": "payments.example.org"})
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")  # plain http: to https
    assert swagger.status_code == 200 and len(swagger.content) > 100_000
    # Production settings: the host check is on, /metrics needs the token.
    refused = httpx.get(f"{base_url}/admin/login/", headers={"Host": "evil.example", "X-Request-ID": "image-req-400"})
    assert refused.status_code == 400 and refused.headers["X-Request-ID"] == "image-req-400"
    login = httpx.get(f"{base_url}/admin/login/", headers={"Host": "payments.example.org", "X-Forwarded-Proto": "https"})
    assert login.status_code == 200 and "school-payments" in login.text
    assert httpx.get(f"{base_url}/metrics").status_code == 401
    metrics = httpx.get(f"{base_url}/metrics", headers={"Authorization": "Bearer metrics-token"})
    assert metrics.status_code == 200
    assert 'http_requests_total{method="GET",route="admin/login/",status="200"}' in metrics.text
    assert 'http_requests_total{method="GET",route="unmatched",status="400"}' in metrics.text
    assert "metrics_database_up 1.0" in metrics.text
    # Its log lines are JSON; the refused request's carries its request id.
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    refused_lines = [line for line in lines if line.get("logger") == "django.security.DisallowedHost"]
    assert refused_lines and {line["request_id"] for line in refused_lines} == {"image-req-400"}


def test_the_image_stores_receipts_in_the_bucket(container, deployment_env, migrated, s3_server, image_bucket):
    script = (
        "from django.core.files.base import ContentFile; from django.core.files.storage import default_storage; "
        "print(default_storage.save('receipts/probe/receipt.pdf', ContentFile(b'%PDF-1.7 probe')))"
    )
    result = run(container, ["python", "manage.py", "shell", "-c", script], deployment_env)
    assert result.returncode == 0, result.stdout
    name = result.stdout.strip().splitlines()[-1]
    body = s3_server.client().get_object(Bucket=image_bucket, Key=name)["Body"].read()
    assert body == b"%PDF-1.7 probe"


def test_the_worker_command_starts_and_answers_its_health_check(container, deployment_env, migrated):
    rootfs, config = container
    port = free_port()
    argv = ["celery", "-A", "config", "worker", "--loglevel=INFO", "--concurrency=1"]
    env = {**deployment_env, "WORKER_METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": "/tmp/prometheus-worker"}
    log_path = ARTIFACTS / "worker.log"
    with log_path.open("w") as log:
        process = local_image.start_in_image(rootfs, config, argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:

        def healthy():
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, timeout=60, interval=0.2)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer metrics-token"})
        assert metrics.status_code == 200
        wait_for(lambda: "ready." in log_path.read_text(), timeout=30)
    finally:
        process.terminate()
        process.wait(timeout=30)
