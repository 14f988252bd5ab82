"""Fixtures of the ops tests: the repository's files, and kustomize builds of the overlays."""

from __future__ import annotations

import asyncio
import functools
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "staging", "prod")


def _build_with_pykustomize(path: Path) -> list[dict]:
    from pykustomize import Kustomizer

    result = asyncio.run(Kustomizer().build(path))
    return [doc for doc in yaml.safe_load_all(result.yaml) if doc]


def _build_with_binary(path: Path) -> list[dict]:
    if shutil.which("kustomize"):
        command = ["kustomize", "build", str(path)]
    elif shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(path)]
    else:
        raise RuntimeError("no kustomize: run `make install` (it installs pykustomize)")
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


@functools.cache
def kustomize_build(relative_path: str) -> tuple[dict, ...]:
    """The resources a real kustomize renders for ``k8s/<relative_path>``. pykustomize (installed
    by `make install`) is kustomize's Go library; a kustomize binary is the fallback where that
    library cannot load. Never a hand-made imitation: a wrong kustomization fails here."""
    path = REPO / "k8s" / relative_path
    try:
        import pykustomize  # noqa: F401
    except ImportError:
        return tuple(_build_with_binary(path))
    try:
        return tuple(_build_with_pykustomize(path))
    except OSError:  # the bundled library is for another platform
        return tuple(_build_with_binary(path))


@pytest.fixture(params=OVERLAYS)
def overlay(request) -> tuple[str, tuple[dict, ...]]:
    return request.param, kustomize_build(f"overlays/{request.param}")


def by_kind(resources, kind: str) -> dict[str, dict]:
    return {resource["metadata"]["name"]: resource for resource in resources if resource["kind"] == kind}


def load_yaml(relative_path: str):
    return yaml.safe_load((REPO / relative_path).read_text())


from tests.s3 import s3_server  # noqa: E402, F401 - fixture: a local S3 server
