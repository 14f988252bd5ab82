"""The shape of the code (docs/architecture.md): no import circles, arrows only point down the
layers, services never import tasks, no module grows past about 600 lines. Imports inside
functions count too (a lazy import is still an arrow); ``if TYPE_CHECKING:`` imports do not."""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lower layers never import higher ones; apps on one layer never import each other.
LAYERS = {
    "core": 0,
    "providers": 1,
    "directory_client": 1,
    "fakes": 2,  # the fake outside services: plumbing and the services that are not providers
    "payments": 3,
    "webhooks": 4,
    "quickbooks_sync": 4,
    "events": 4,  # events out: the outbox relay, Kafka, the schools' endpoints
    "dashboard": 5,
    "demo": 5,
    "ops": 5,
    "config": 6,
}
# Plumbing every app may use although it lives with the project's wiring: the Celery helpers
# (enqueue by task name), the metrics registry and the request id. They import no app above
# providers.
PLUMBING = {"config.celery", "config.metrics", "ops.context", "ops.celery_signals"}
# Named exceptions, (importing app or module, imported module), each with its reason:
ALLOWED = {
    # A provider's fake API server is built on the fakes' HTTP plumbing.
    ("providers", "fakes.server"),
    # A worker starts its metrics server when Celery signals that it is ready; the server reads
    # the domain's backlog at scrape time, not at import.
    ("ops.celery_signals", "ops.metrics"),
}


def _allowed(module: str, target: str) -> bool:
    return (module, target) in ALLOWED or (module.split(".")[0], target) in ALLOWED
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def project_modules() -> dict[str, Path]:
    modules = {}
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts or "tests" in path.parts:
                continue
            modules[_module_name(path)] = path
    return modules


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _owner(name: str) -> str | None:
    modules = project_modules()
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


@cache
def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in project_modules().items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = _owner(name)
                if target and target != module:
                    graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_the_apps_and_their_arrows():
    graph = import_graph()
    assert {"payments.services.settlement", "quickbooks_sync.services.sync", "webhooks.services"} <= set(graph)
    assert "payments.models" in graph["quickbooks_sync.models"]


def test_no_import_circles():
    assert _cycles(import_graph()) == []


def test_a_circle_is_found_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _app(module: str) -> str:
    return module.split(".")[0]


def test_arrows_only_point_down_the_layers():
    upward = []
    for module, targets in import_graph().items():
        for target in targets:
            source_app, target_app = _app(module), _app(target)
            if source_app == target_app or target in PLUMBING or _allowed(module, target):
                continue
            if LAYERS[target_app] >= LAYERS[source_app]:
                upward.append(f"{module} -> {target}")
    assert sorted(upward) == []


def test_the_plumbing_sits_below_the_apps_that_use_it():
    # It may read the provider registry (metric labels), nothing above it.
    reaching = [
        f"{module} -> {target}"
        for module in PLUMBING
        for target in import_graph().get(module, ())
        if target not in PLUMBING and not _allowed(module, target) and LAYERS[_app(target)] > LAYERS["providers"]
    ]
    assert reaching == []


def test_services_never_import_tasks():
    offending = [
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        if ".services" in f".{module}" and not module.endswith(".tasks")
        for target in targets
        if target.endswith(".tasks")
    ]
    assert offending == []


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_module_is_over_600_lines(package):
    too_long = {
        str(path.relative_to(ROOT)): count
        for module, path in project_modules().items()
        if _app(module) == package and (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert too_long == {}
