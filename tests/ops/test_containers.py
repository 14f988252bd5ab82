"""The Dockerfile, parsed and checked; the image built from it is started in test_image.py."""

from __future__ import annotations

import re

from tests.ops.conftest import REPO

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


def test_the_image_installs_exactly_requirements_txt_from_wheels():
    """requirements.txt is the runtime set (tests/ops/test_requirements.py keeps it closed):
    installed without resolving anything more, from wheels, and checked."""
    (run,) = [a for k, a, stage in dockerfile_instructions() if k == "RUN" and "pip install" in a and stage == "build"]
    assert "pip install --no-deps --only-binary=:all: --requirement requirements.txt" in run
    assert "pip check" in run
    assert "--mount=type=secret,id=ca-bundle" in run and "PIP_CERT=/run/secrets/ca-bundle" in run
    copies = [a for k, a, stage in dockerfile_instructions() if k == "COPY" and stage == "build"]
    assert copies[0] == "requirements.txt ./"  # the dependency layer is cached apart from the code
    assert "requirements-dev.txt" not in (REPO / "Dockerfile").read_text()


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
