"""The demo data of every app, for ``make run``: safe to load again and again."""

from __future__ import annotations

from django.db import transaction

from payments.demo import DEMO_SCHOOL_CODE, DemoLogin, payments_demo_seed
from payments.models import School
from quickbooks_sync.demo import qbo_demo_seed


def demo_seed() -> DemoLogin:
    """The demo school, its provider accounts, students, pay link and staff logins, connected to
    the local fake QuickBooks."""
    with transaction.atomic():
        login = payments_demo_seed()
        qbo_demo_seed(school=School.objects.get(code=DEMO_SCHOOL_CODE))
    return login


def demo_fakes_connect(*, fakes, login: DemoLogin, public_base_url: str) -> None:
    """Register the demo schools' webhook endpoints on the local fake providers, as a merchant
    does in each provider's dashboard: their hosted checkouts then notify this service."""
    for slug, school_code, secret in login.webhook_endpoints:
        fakes.by_prefix[f"/{slug}"].webhook_endpoints = [(f"{public_base_url}/api/webhooks/{slug}/{school_code}", secret)]
