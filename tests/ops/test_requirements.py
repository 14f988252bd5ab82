"""The requirement files: requirements.txt is everything the image runs, pinned and closed;
requirements-dev.txt adds only test tools. Everything the code and the settings import comes from
requirements.txt, so the image (which installs nothing else) cannot miss a module again.

Fast: read from the installed packages' metadata and the code's own import statements, no
install. The image test (test_image.py) builds and starts the real image.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
from fnmatch import fnmatch
from functools import cache
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.ops.conftest import REPO

# What the image holds besides its virtualenv (the Dockerfile's COPY minus .dockerignore).
FIRST_PARTY = (
    "config", "core", "payments", "providers", "webhooks", "directory_client", "quickbooks_sync", "ops", "fakes", "dashboard",
    "demo", "events",
)  # fmt: skip
# Pythons the image may have: Debian bookworm's own (the local base) and the official image's.
PYTHONS = ("3.11.2", "3.11.14")


def requirement_lines(name: str) -> list[str]:
    lines = []
    for raw in (REPO / name).read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


@cache
def runtime_requirements() -> tuple[Requirement, ...]:
    return tuple(Requirement(line) for line in requirement_lines("requirements.txt"))


def environment(python_full_version: str) -> dict[str, str]:
    env = default_environment()
    env.update(python_full_version=python_full_version, python_version=python_full_version.rsplit(".", 1)[0])
    return env


def applicable(requirement: Requirement, env: dict[str, str], extra: str = "") -> bool:
    return requirement.marker is None or requirement.marker.evaluate({**env, "extra": extra})


def pinned_version(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    return specifier.version


def test_every_runtime_requirement_is_pinned_exactly():
    for requirement in runtime_requirements():
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"not pinned: {requirement}"
    names = [canonicalize_name(r.name) for r in runtime_requirements()]
    assert len(names) == len(set(names)), "a package is listed twice"


@pytest.mark.parametrize("python_full_version", PYTHONS)
def test_runtime_requirements_are_closed(python_full_version):
    """Every dependency of every pinned package (for that Python, with the extras asked for) is
    itself pinned here at a version it accepts: `pip install --no-deps -r requirements.txt`
    installs a complete, consistent set."""
    env = environment(python_full_version)
    pins = {canonicalize_name(r.name): r for r in runtime_requirements() if applicable(r, env)}
    problems = []
    running = environment(".".join(map(str, sys.version_info[:3])))
    for name, requirement in sorted(pins.items()):
        try:
            installed = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            # Only for another Python (async-timeout, before 3.11.3): its own dependencies are
            # checked on a machine whose Python installs it.
            assert not applicable(requirement, running), f"{name} is not installed: run `make install`"
            continue
        assert canonicalize_name(installed.metadata["Name"]) == name
        assert installed.version == pinned_version(requirement), (
            f"{name}: {installed.version} installed, {pinned_version(requirement)} pinned: run `make install`"
        )
        for line in installed.requires or []:
            dependency = Requirement(line)
            extras = requirement.extras or {""}
            if not any(applicable(dependency, env, extra) for extra in extras | {""}):
                continue
            pinned = pins.get(canonicalize_name(dependency.name))
            if pinned is None:
                problems.append(f"{name} needs {dependency}, which is not in requirements.txt")
            elif not dependency.specifier.contains(pinned_version(pinned), prereleases=True):
                problems.append(f"{name} needs {dependency}, requirements.txt pins {pinned_version(pinned)}")
    assert not problems, "\n".join(problems)


def test_dev_requirements_include_the_runtime_ones_and_add_only_tools():
    lines = requirement_lines("requirements-dev.txt")
    assert lines[0] == "-r requirements.txt"
    runtime_names = {canonicalize_name(r.name) for r in runtime_requirements()}
    for line in lines[1:]:
        requirement = Requirement(line)
        assert [s.operator for s in requirement.specifier] == ["=="], f"not pinned: {line}"
        # A runtime package pinned again here could drift from the image's version.
        assert canonicalize_name(requirement.name) not in runtime_names, f"{requirement.name} is a runtime requirement"
    dev_names = {canonicalize_name(Requirement(line).name) for line in lines[1:]}
    assert {"pytest", "pytest-django", "factory-boy", "moto"} <= dev_names
    assert not dev_names & runtime_names


@cache
def runtime_distributions() -> frozenset[str]:
    """The distributions requirements.txt installs (for the running Python)."""
    env = environment(".".join(map(str, sys.version_info[:3])))
    return frozenset(canonicalize_name(r.name) for r in runtime_requirements() if applicable(r, env))


def providing_distributions(top_level_module: str) -> set[str]:
    return {canonicalize_name(name) for name in importlib.metadata.packages_distributions().get(top_level_module, [])}


def third_party(module: str) -> bool:
    top = module.split(".")[0]
    return top not in sys.stdlib_module_names and top not in FIRST_PARTY and top != "__future__"


def settings_dotted_paths() -> dict[str, str]:
    """Every module or class the settings name, from production settings (with S3 storage and
    error reporting on), keyed by where it is named."""
    script = r"""
import json
from django.conf import settings
paths = {}
for index, app in enumerate(settings.INSTALLED_APPS): paths[f"INSTALLED_APPS[{index}]"] = app
for index, item in enumerate(settings.MIDDLEWARE): paths[f"MIDDLEWARE[{index}]"] = item
for name, storage in settings.STORAGES.items(): paths[f"STORAGES[{name}]"] = storage["BACKEND"]
for name, cache in settings.CACHES.items(): paths[f"CACHES[{name}]"] = cache["BACKEND"]
for name, database in settings.DATABASES.items(): paths[f"DATABASES[{name}]"] = database["ENGINE"]
for index, template in enumerate(settings.TEMPLATES): paths[f"TEMPLATES[{index}]"] = template["BACKEND"]
for name, formatter in settings.LOGGING["formatters"].items():
    if "()" in formatter: paths[f"LOGGING formatter {name}"] = formatter["()"]
for key, value in settings.REST_FRAMEWORK.items():
    for index, item in enumerate([value] if isinstance(value, str) else value if isinstance(value, list) else []):
        if "." in str(item): paths[f"REST_FRAMEWORK[{key}][{index}]"] = item
paths["WSGI_APPLICATION"] = settings.WSGI_APPLICATION
print(json.dumps(paths))
"""
    env = {
        "APP_ENV": "production",
        "SECRET_KEY": "a-secret-key-for-this-test-only-0123456789",
        "FIELD_ENCRYPTION_KEYS": "4Kk2SQCz6kzf6VwEfMSYLRwKrhAPC-O7KXA7Cjc8Ttw=",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "SCHOOL_API_BASE_URL": "https://directory.example.org",
        "SCHOOL_API_TOKEN": "token",
        "METRICS_BEARER_TOKEN": "token",
        "AWS_STORAGE_BUCKET_NAME": "bucket",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_app_and_backend_the_settings_name_comes_from_requirements_txt():
    """What failed the image's collectstatic (an INSTALLED_APPS app from a test-only section)
    fails here first: each app, middleware, storage, cache, database engine, template and log
    formatter the production settings name is first-party or installed by requirements.txt."""
    paths = settings_dotted_paths()
    assert "drf_spectacular" in paths.values() and "storages.backends.s3.S3Storage" in paths.values()
    # Database engines are Django's; the driver they load is the requirement.
    drivers = {"django.db.backends.postgresql": "psycopg"}
    problems = []
    for where, dotted in sorted(paths.items()):
        module = drivers.get(dotted, dotted)
        if not third_party(module):
            continue
        top = module.split(".")[0]
        providers = providing_distributions(top)
        if not providers & runtime_distributions():
            problems.append(f"{where} = {dotted}: module {top!r} comes from {sorted(providers) or 'nothing installed'}")
    assert not problems, "\n".join(problems)


def in_image(path: Path) -> bool:
    """Whether the Dockerfile's ``COPY . .`` takes ``path``: no .dockerignore pattern matches it
    or one of its directories (each provider's own tests, ``providers/*/tests``, stay out)."""
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [pattern for pattern in patterns if pattern and not pattern.startswith("#")]
    parts = path.relative_to(REPO).parts
    return not any(fnmatch("/".join(parts[:n]), pattern) for pattern in patterns for n in range(1, len(parts) + 1))


def first_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported by the image's own code (any import statement, also inside
    functions), with the files importing each."""
    imports: dict[str, set[str]] = {}
    for package in FIRST_PARTY:
        for path in sorted(path for path in (REPO / package).rglob("*.py") if in_image(path)):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    imports.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return imports


def test_every_module_the_code_imports_comes_from_requirements_txt():
    problems = []
    for top, files in sorted(first_party_imports().items()):
        if not third_party(top):
            continue
        providers = providing_distributions(top)
        if not providers & runtime_distributions():
            problems.append(f"{top} (imported by {', '.join(sorted(files)[:3])}) comes from {sorted(providers) or 'nothing installed'}")
    assert not problems, "\n".join(problems)


def test_the_checks_catch_a_test_tool_imported_by_the_service(monkeypatch):
    """The check above is not vacuous: pytest (a dev requirement) would be reported."""
    assert "pytest" not in {top for top in first_party_imports() if third_party(top)}
    assert not providing_distributions("pytest") & runtime_distributions()
    assert providing_distributions("drf_spectacular") & runtime_distributions()
    assert re.fullmatch(r"[a-z0-9-]+", next(iter(providing_distributions("yaml"))))
