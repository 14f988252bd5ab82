"""Demo data for ``make run``: safe to load again and again."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from payments.models import (
    PaymentRequest,
    ProviderAccount,
    School,
    StaffMembership,
    Student,
)

DEMO_SCHOOL_CODE = "ng"
DEMO_SURE_PAY_SECRET = "sekret"
DEMO_DUMMY_SECRET = "dummy-demo-secret"
DEMO_ADMIN_USERNAME = "admin"
# Staff of the demo school only, for the REST API walkthrough (token printed by `make run`).
DEMO_BURSAR_USERNAME = "bursar"
DEMO_STUDENTS = [("STU-0001", "Amina Nakato"), ("STU-0002", "Brian Okello"), ("STU-0003", "Grace Atim")]
DEMO_REQUEST_DESCRIPTION = "Term 1 fees"
DEMO_REQUEST_AMOUNT_MINOR = 450_000  # UGX has no minor unit: UGX 450,000


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str
    # An open payment request's pay link, and the bursar's API token (the walkthroughs in docs/parents.md).
    pay_path: str = ""
    api_token: str = ""


def payments_demo_seed() -> DemoLogin:
    """Create or refresh the demo school, its provider accounts and the staff login."""
    with transaction.atomic():
        school, _ = School.objects.update_or_create(
            code=DEMO_SCHOOL_CODE, defaults={"name": "Nile Gardens School", "currency": "UGX", "time_zone": "Africa/Kampala", "active": True}
        )
        for provider, secret in (("surepay", DEMO_SURE_PAY_SECRET), ("dummy", DEMO_DUMMY_SECRET)):
            account = ProviderAccount.objects.filter(school=school, provider=provider).first() or ProviderAccount(
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
        pay_path, api_token = _demo_parents_pay(school, password=password)
    return DemoLogin(DEMO_ADMIN_USERNAME, password, pay_path, api_token)


def _demo_parents_pay(school: School, *, password: str) -> tuple[str, str]:
    """The students, an open payment request (a new one once the last was paid, so there is
    always one to pay), and a staff member of the school (the admin's password; the staff
    group) with an API token."""
    from payments.services import payment_request_create, payment_request_draft
    from payments.staff import staff_group_ensure

    for number, name in DEMO_STUDENTS:
        Student.objects.update_or_create(school=school, student_number=number, defaults={"full_name": name})
    payment_request = PaymentRequest.objects.filter(
        school=school, description=DEMO_REQUEST_DESCRIPTION, status=PaymentRequest.Status.OPEN
    ).first()
    if payment_request is None:
        draft = payment_request_draft(
            school=school,
            student_number=DEMO_STUDENTS[0][0],
            description=DEMO_REQUEST_DESCRIPTION,
            amount_minor=DEMO_REQUEST_AMOUNT_MINOR,
        )
        payment_request = payment_request_create(school=school, draft=draft)
    bursar = get_user_model().objects.filter(username=DEMO_BURSAR_USERNAME).first()
    if bursar is None:
        bursar = get_user_model()(username=DEMO_BURSAR_USERNAME, email="bursar@example.org")
    if not bursar.check_password(password):
        bursar.set_password(password)
    bursar.is_staff, bursar.is_active, bursar.is_superuser = True, True, False
    bursar.save()
    bursar.groups.add(staff_group_ensure())
    StaffMembership.objects.get_or_create(user=bursar, school=school)
    return payment_request.pay_path, _demo_api_token(bursar)


def _demo_api_token(bursar) -> str:
    """The bursar's API token. Tokens are stored hashed and cannot be read back, so the demo keeps
    its own copy in a git-ignored file (like the admin password) and makes a new token only when
    that one no longer works."""
    from payments.api_tokens import api_token_create, api_token_matches

    path = Path(settings.BASE_DIR) / ".demo-api-token"
    if path.exists():
        token = path.read_text().strip()
        if api_token_matches(user=bursar, token=token):
            return token
    token = api_token_create(user=bursar)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


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
