"""All local fakes on one port, each under its own path prefix. Used by ``make run``
(``manage.py rundemo``), ``python -m fakes`` and docker-compose-dev."""

from __future__ import annotations

from fakes.directory import FakeDirectory
from fakes.quickbooks import build_demo_quickbooks
from fakes.server import PrefixRouter


def build_fakes() -> PrefixRouter:
    """One router with every fake mounted; add a new fake here with its prefix."""
    return PrefixRouter(
        {
            "/directory": FakeDirectory(),
            "/qbo": build_demo_quickbooks(),
        }
    )
