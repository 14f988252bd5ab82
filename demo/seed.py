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
