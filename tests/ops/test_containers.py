"""The Dockerfile and docker-compose-dev.yaml, parsed and checked (no Docker engine here)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests.ops.conftest import REPO, load_yaml

# --- Dockerfile -------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str, str | None]]:
    """(INSTRUCTION, arguments, stage) for each instruction, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    instructions, stage = [], None
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)", arguments, re.IGNORECASE)
            stage = match.group(1) if match else None
        instructions.append((keyword, arguments.strip(), stage))
    return instructions


def exec_form(arguments: str) -> list[str]:
    import json

    return json.loads(arguments)


def test_dockerfile_is_multi_stage_with_a_slim_runtime():
    froms = [(arguments, stage) for keyword, arguments, stage in dockerfile_instructions() if keyword == "FROM"]
    assert [stage for _, stage in froms] == ["build", "runtime"]
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for k, a, _ in dockerfile_instructions() if k == "ARG" and "=" in a}
    assert "slim" in args["PYTHON_IMAGE"] and "3.11" in args["PYTHON_IMAGE"]  # .python-version
    copies_from_build = [a for k, a, stage in dockerfile_instructions() if k == "COPY" and stage == "runtime"]
    assert any(a.startswith("--from=build /opt/venv") for a in copies_from_build)
    # The compiler is only in the build stage.
    runtime_runs = " ".join(a for k, a, stage in dockerfile_instructions() if k == "RUN" and stage == "runtime")
    assert "build-essential" not in runtime_runs


def test_dockerfile_runs_gunicorn_as_a_numeric_non_root_user():
    runtime = [(k, a) for k, a, stage in dockerfile_instructions() if stage == "runtime"]
    users = [a for k, a in runtime if k == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert int(users[-1].split(":")[0]) == 10001  # what k8s/base's runAsUser says
    cmd = exec_form([a for k, a in runtime if k == "CMD"][-1])
    assert cmd[:2] == ["gunicorn", "config.wsgi"]
    assert cmd[cmd.index("--config") + 1] == "config/gunicorn.conf.py"
    # The USER comes before CMD: nothing after it runs as root.
    keywords = [k for k, _ in runtime]
    assert keywords.index("USER") < keywords.index("CMD")
    healthcheck = [a for k, a in runtime if k == "HEALTHCHECK"]
    assert healthcheck and "/healthz" in healthcheck[0]


def test_dockerfile_collects_static_files_and_bakes_no_secret():
    instructions = dockerfile_instructions()
    runs = [a for k, a, stage in instructions if k == "RUN" and stage == "build"]
    assert any("manage.py collectstatic --noinput" in run for run in runs)
    env_lines = " ".join(a for k, a, _ in instructions if k in {"ENV", "ARG"})
    for name in ("SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DATABASE_URL", "REDIS_URL", "TOKEN", "PASSWORD"):
        assert name not in env_lines, f"{name} baked into the image"
    assert "APP_ENV=production" in env_lines  # refuses to start without real secrets
    assert "PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus" in env_lines
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", ".env", "db.sqlite3", ".demo-admin-password"):
        assert entry in ignored


def test_runtime_requirements_are_requirements_txt_without_the_test_tools():
    """The build stage installs requirements.txt cut at its "# Tests" section (the sed in the
    Dockerfile): what the image needs is above it, pytest and friends are not."""
    (run,) = [a for k, a, _ in dockerfile_instructions() if k == "RUN" and "requirements-runtime.txt" in a]
    sed_expression = shlex.split(run.split("&&")[0])[1]
    runtime = subprocess.run(
        ["sed", sed_expression, str(REPO / "requirements.txt")], check=True, capture_output=True, text=True
    ).stdout
    names = {re.split(r"[=\[<>]", line)[0].lower() for line in runtime.splitlines() if line and not line.startswith("#")}
    assert {"django", "celery", "gunicorn", "psycopg", "prometheus-client", "python-json-logger", "whitenoise"} <= names
    assert not names & {"pytest", "pytest-django", "factory-boy", "pyyaml"}


def test_gunicorn_config_is_gthread_and_manages_the_metrics_directory(tmp_path, monkeypatch):
    import runpy

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prom"))
    config = runpy.run_path(str(REPO / "config" / "gunicorn.conf.py"))
    assert config["worker_class"] == "gthread"
    assert config["bind"] == "0.0.0.0:8000"
    (tmp_path / "prom").mkdir()
    (tmp_path / "prom" / "counter_123.db").write_bytes(b"old run")

    class Server:
        class log:
            @staticmethod
            def info(*args):
                pass

    config["on_starting"](Server)
    assert list((tmp_path / "prom").iterdir()) == []


# --- docker-compose-dev.yaml ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose():
    return load_yaml("docker-compose-dev.yaml")


def test_compose_has_the_whole_stack(compose):
    services = compose["services"]
    assert set(services) == {"db", "redis", "fakes", "migrate", "web", "worker", "beat"}
    assert services["db"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["web"]["command"][:2] == ["gunicorn", "config.wsgi"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "config", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "config", "beat"]
    assert services["fakes"]["command"][:3] == ["python", "-m", "fakes"]
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    for name in ("fakes", "migrate", "web", "worker", "beat"):
        assert services[name]["build"]["context"] == "."
        assert services[name]["image"] == "school-payments:dev"
    assert "replicas" not in services["beat"].get("deploy", {})  # one beat


def test_compose_wires_the_services_together(compose):
    services = compose["services"]
    db_env = services["db"]["environment"]
    for name in ("migrate", "web", "worker", "beat"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"] == (
            f"postgres://{db_env['POSTGRES_USER']}:{db_env['POSTGRES_PASSWORD']}@db:5432/{db_env['POSTGRES_DB']}"
        )
        assert env["REDIS_URL"].startswith("redis://redis:6379/")
        # The School Directory is the fakes service, on the port it listens on.
        fakes_port = services["fakes"]["command"][services["fakes"]["command"].index("--port") + 1]
        assert env["SCHOOL_API_BASE_URL"] == f"http://fakes:{fakes_port}/directory"
        assert env["LOG_FORMAT"] == "json"
        assert env["APP_ENV"] == "development"
    assert services["fakes"]["command"][services["fakes"]["command"].index("--host") + 1] == "0.0.0.0"
    assert services["worker"]["environment"]["WORKER_METRICS_PORT"] == "9100"


def test_compose_startup_order_and_healthchecks(compose):
    services = compose["services"]
    for name in ("db", "redis", "fakes", "web", "worker"):
        assert services[name]["healthcheck"]["test"], name
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(services["worker"]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["redis"] == {"condition": "service_healthy"}, name
    assert services["web"]["depends_on"]["fakes"] == {"condition": "service_healthy"}
    assert services["migrate"]["restart"] == "no"
    # Published only on loopback.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def test_compose_file_is_valid_for_docker_compose_when_docker_can_check_it(compose):
    """`docker compose config` validates against the compose schema; it needs no engine."""
    result = subprocess.run(
        ["docker", "compose", "-f", str(REPO / "docker-compose-dev.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
    ) if sys.platform.startswith("linux") and _docker_compose_available() else None
    if result is None:
        pytest.skip("docker compose plugin not installed")
    assert result.returncode == 0, result.stderr


def _docker_compose_available() -> bool:
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False
