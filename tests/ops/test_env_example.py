""".env.example lists every environment variable the service reads, each with a comment, and
nothing it does not read."""

from __future__ import annotations

import ast
import re

from tests.ops.conftest import REPO

# The one environment reader's functions (config/env.py) and the settings' helper around it.
READERS = {"env_str", "env_bool", "env_int", "env_list", "env_ip_networks", "_provider_api_base_url"}
# Read by a library, not by our code: boto3 takes the bucket's keys from the environment.
READ_BY_LIBRARIES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
VARIABLE_LINE = re.compile(r"^#? ?([A-Z][A-Z0-9_]*)=")


def variables_read() -> dict[str, str]:
    """Every variable name read by config/ (settings, gunicorn, metrics) and ops/: through the
    settings' environment reader, or ``os.environ.get``/``os.getenv``/``os.environ[...]``."""
    names: dict[str, str] = {}
    files = sorted([*REPO.glob("config/*.py"), *REPO.glob("ops/*.py")])
    for path in files:
        tree = ast.parse(path.read_text())
        constants = {
            target.id: node.value.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            for target in node.targets
            if isinstance(target, ast.Name)
        }

        def name_of(argument):
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                return argument.value
            if isinstance(argument, ast.Name):
                return constants.get(argument.id)
            return None

        for node in ast.walk(tree):
            found = None
            if isinstance(node, ast.Call):
                function = node.func
                called = function.id if isinstance(function, ast.Name) else getattr(function, "attr", None)
                environ_get = called == "get" and ast.unparse(function).endswith("os.environ.get")
                if (called in READERS or environ_get or called == "getenv") and node.args:
                    found = name_of(node.args[0])
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("os.environ"):
                found = name_of(node.slice)
            if found and re.fullmatch(r"[A-Z][A-Z0-9_]*", found):
                names.setdefault(found, str(path.relative_to(REPO)))
    return names


def example_lines() -> list[str]:
    return (REPO / ".env.example").read_text().splitlines()


def test_the_reader_finds_what_the_settings_read():
    names = variables_read()
    for expected in ("SECRET_KEY", "DATABASE_URL", "STRIPE_API_BASE_URL", "GUNICORN_WORKERS", "PROMETHEUS_MULTIPROC_DIR", "SENTRY_DSN"):
        assert expected in names, expected
    assert len(names) > 90


def test_every_variable_read_is_in_env_example():
    listed = {match.group(1) for line in example_lines() if (match := VARIABLE_LINE.match(line))}
    missing = {name: where for name, where in variables_read().items() if name not in listed}
    assert not missing, f"add to .env.example (with a comment): {missing}"
    unknown = listed - set(variables_read()) - READ_BY_LIBRARIES
    assert not unknown, f"in .env.example but read by nothing: {sorted(unknown)}"


def test_every_variable_has_a_comment_and_appears_once():
    lines = example_lines()
    seen: set[str] = set()
    for index, line in enumerate(lines):
        match = VARIABLE_LINE.match(line)
        if not match:
            continue
        name = match.group(1)
        assert name not in seen, f"{name} is listed twice"
        seen.add(name)
        above = lines[index - 1]
        assert above.startswith("# ") and not VARIABLE_LINE.match(above) and len(above) > 12, (
            f"{name} needs a comment line of its own above it"
        )


def test_no_secret_has_a_value_in_the_example():
    for line in example_lines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)  # set, not commented out
        if match:
            assert not re.search(r"SECRET|TOKEN|KEY|PASSWORD|DSN", match.group(1)), line
