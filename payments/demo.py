"""Demo data for ``make run``: safe to load again and again."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from payments.models import AggregatorAccount, School

DEMO_SCHOOL_CODE = "ng"
DEMO_SURE_PAY_SECRET = "sekret"
DEMO_DUMMY_SECRET = "dummy-demo-secret"
DEMO_ADMIN_USERNAME = "admin"


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str


def demo_seed() -> DemoLogin:
    """Create or refresh the demo school, its provider accounts and the staff login."""
    with transaction.atomic():
        school, _ = School.objects.update_or_create(
            code=DEMO_SCHOOL_CODE, defaults={"name": "Nile Gardens School", "currency": "UGX", "active": True}
        )
        for provider, secret in (("surepay", DEMO_SURE_PAY_SECRET), ("dummy", DEMO_DUMMY_SECRET)):
            account = AggregatorAccount.objects.filter(school=school, provider=provider).first() or AggregatorAccount(
                school=school, provider=provider
            )
            account.webhook_secret = secret
            account.active = True
            account.save()
        password = _demo_admin_password()
        user = get_user_model().objects.filter(username=DEMO_ADMIN_USERNAME).first()
        if user is None:
            user = get_user_model()(username=DEMO_ADMIN_USERNAME, email="admin@example.org")
        user.is_staff = user.is_superuser = user.is_active = True
        if not user.check_password(password):
            user.set_password(password)
        user.save()
        from quickbooks_sync.demo import qbo_demo_seed

        qbo_demo_seed(school=school)  # connected to the local fake QuickBooks
    return DemoLogin(DEMO_ADMIN_USERNAME, password)


def _demo_admin_password() -> str:
    """A random password made on the first run and kept in a git-ignored file, so it stays the
    same across restarts without ever being written into the repository."""
    path = Path(settings.BASE_DIR) / ".demo-admin-password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password
