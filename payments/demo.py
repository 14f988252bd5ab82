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
# Test-mode accounts whose provider API is the local fake (fakes/app.py), with the fake's keys:
# "Pay with Stripe" goes to the fake's hosted checkout, which posts a webhook signed with this
# secret (rundemo registers the endpoint on the fake, as a merchant does in Stripe's dashboard).
DEMO_STRIPE_API_KEY = "sk_test_fake"
DEMO_STRIPE_WEBHOOK_SECRET = "whsec_demo_stripe"
DEMO_FLUTTERWAVE_API_KEY = "FLWSECK_TEST-fake"
DEMO_FLUTTERWAVE_SECRET_HASH = "flw-demo-secret-hash"
DEMO_PARENT_EMAIL = "parent@example.org"  # Paystack and Flutterwave need the payer's address
# Each provider takes its own currencies: one more demo school per region, each with its
# provider's test-mode account on the local fake (its keys are the fake's defaults) and an open
# request. (code, name, currency, language, student, amount in minor units, accounts), each
# account (provider, api_key, webhook_secret, credentials).
DEMO_KENYA_SCHOOL_CODE = "nrb"
DEMO_MPESA_CREDENTIALS = {"consumer_key": "ck_fake", "consumer_secret": "cs_fake", "shortcode": "174379", "passkey": "pk_fake"}
DEMO_REGIONAL_SCHOOLS = (
    (DEMO_KENYA_SCHOOL_CODE, "Nairobi Hills Academy", "KES", "sw", ("KE-0001", "Wanjiru Kamau"), 150_000, (
        ("mpesa", "", "mpesa-demo-callback-secret", DEMO_MPESA_CREDENTIALS),
        # Paystack signs webhooks with the secret API key itself.
        ("paystack", "sk_test_fake", "sk_test_fake", None),
    )),
    ("add", "Entoto Hills School", "ETB", "en", ("ET-0001", "Abebe Bikila"), 450_000, (
        ("chapa", "CHASECK_TEST-fake", "chapa-demo-webhook-secret", None),
    )),
    ("bkk", "Chao Phraya International School", "THB", "en", ("TH-0001", "Somchai Jaidee"), 2_500_000, (
        ("omise", "skey_test_fake", "omise-demo-webhook-secret", None),
    )),
)  # fmt: skip


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str
    # An open payment request's pay link, and the bursar's API token (the walkthroughs in docs/parents.md).
    pay_path: str = ""
    api_token: str = ""
    # The Kenyan school's pay link (M-Pesa, Paystack); every regional school's (code, pay path);
    # the webhook endpoints to register on the fakes: (provider, school code, signing secret).
    kenya_pay_path: str = ""
    webhook_endpoints: tuple[tuple[str, str, str], ...] = ()
    regional_pay_paths: tuple[tuple[str, str], ...] = ()


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
        endpoints = []
        for provider, api_key, secret in (
            ("stripe", DEMO_STRIPE_API_KEY, DEMO_STRIPE_WEBHOOK_SECRET),
            ("flutterwave", DEMO_FLUTTERWAVE_API_KEY, DEMO_FLUTTERWAVE_SECRET_HASH),
        ):
            _demo_test_account(school, provider, api_key=api_key, secret=secret)
            endpoints.append((provider, school.code, secret))
        regional = []
        for code, name, currency, language, student, amount_minor, accounts in DEMO_REGIONAL_SCHOOLS:
            regional_school, _ = School.objects.update_or_create(
                code=code, defaults={"name": name, "currency": currency, "active": True, "language": language}
            )
            for provider, api_key, secret, credentials in accounts:
                _demo_test_account(regional_school, provider, api_key=api_key, secret=secret, credentials=credentials)
                if provider != "mpesa":  # M-Pesa's callback URL travels with each prompt
                    endpoints.append((provider, code, secret))
            regional.append((code, _demo_open_request(regional_school, student, amount_minor)))
        password = _demo_admin_password()
        user = get_user_model().objects.filter(username=DEMO_ADMIN_USERNAME).first()
        if user is None:
            user = get_user_model()(username=DEMO_ADMIN_USERNAME, email="admin@example.org")
        user.is_staff = user.is_superuser = user.is_active = True
        if not user.check_password(password):
            user.set_password(password)
        user.save()
        pay_path, api_token = _demo_parents_pay(school, password=password)
    return DemoLogin(
        DEMO_ADMIN_USERNAME, password, pay_path, api_token, dict(regional)[DEMO_KENYA_SCHOOL_CODE], tuple(endpoints), tuple(regional)
    )


def _demo_test_account(school: School, provider: str, *, api_key: str, secret: str, credentials=None) -> None:
    account = ProviderAccount.objects.filter(school=school, provider=provider).first() or ProviderAccount(
        school=school, provider=provider
    )
    account.api_key, account.webhook_secret = api_key, secret
    if credentials:
        account.credentials = credentials
    account.test_mode = account.active = True
    account.save()


def _demo_open_request(school: School, student: tuple[str, str], amount_minor: int) -> str:
    """The school's open demo request (a new one once the last was paid): its pay path."""
    from payments.services import payment_request_create, payment_request_draft

    number, name = student
    Student.objects.update_or_create(school=school, student_number=number, defaults={"full_name": name})
    payment_request = PaymentRequest.objects.filter(school=school, status=PaymentRequest.Status.OPEN).first()
    if payment_request is None:
        draft = payment_request_draft(
            school=school, student_number=number, description=DEMO_REQUEST_DESCRIPTION, amount_minor=amount_minor,
            parent_email=DEMO_PARENT_EMAIL, parent_phone="0708374149" if school.currency == "KES" else "",
        )  # fmt: skip
        payment_request = payment_request_create(school=school, draft=draft)
    return payment_request.pay_path


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
            parent_email=DEMO_PARENT_EMAIL,
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
