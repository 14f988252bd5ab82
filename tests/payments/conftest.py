"""Fixtures of the parents-pay tests: a school with students and a dummy account, payment
requests, staff users, and a test provider that sends on-phone prompts through a fake server."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model

from payments.models import StaffMembership
from tests.factories import AccountFactory, PaymentRequestFactory, SchoolFactory, StudentFactory
from tests.payments.messaging import sms_gateway, smtp_server  # noqa: F401 - fixtures of the messages to parents


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Uploaded receipts go to a temporary directory, never the working tree."""
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's million rounds cost most of a second per staff user on a 2-core machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _public_base_url(settings):
    settings.PUBLIC_BASE_URL = "https://pay.example.org"


@pytest.fixture
def student(school):
    return StudentFactory(school=school, student_number="STU-0001", full_name="Amina Nakato")


@pytest.fixture
def dummy_account(school):
    return AccountFactory(school=school, provider="dummy", webhook_secret="dummy-secret")


@pytest.fixture
def payment_request(school, student):
    return PaymentRequestFactory(school=school, student=student, amount_minor=450_000, currency="UGX")


@pytest.fixture
def other_school(db):
    school = SchoolFactory(code="kla", name="Kampala Hill School", currency="UGX")
    AccountFactory(school=school, provider="dummy", webhook_secret="kla-dummy-secret")
    return school


def make_staff(username: str, *schools, superuser: bool = False, password: str = "correct horse battery"):
    user = get_user_model().objects.create_user(username=username, password=password, is_staff=True)
    if superuser:
        user.is_superuser = True
        user.save()
    for school in schools:
        StaffMembership.objects.create(user=user, school=school)
    return user


@pytest.fixture
def staff(school):
    """Staff of school ng, with the model permissions a bursar gets in admin."""
    from django.contrib.auth.models import Permission

    user = make_staff("bursar", school)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="payments"))
    return user


def csrf_token(html: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


@pytest.fixture
def promptpay(monkeypatch, settings, school):
    """The on-phone-prompt test provider, registered in the real registry, with its fake API
    server listening on a real socket. Yields (fake server, account)."""
    from fakes.server import serve_in_thread
    from providers import registry
    from tests.payments.promptpay import API_KEY, FakePromptPay

    monkeypatch.setitem(registry.PROVIDERS, "promptpay", "tests.payments.promptpay.PromptPayProvider")
    registry._load.cache_clear()
    fake = FakePromptPay()
    server = serve_in_thread(fake)
    settings.PROMPTPAY_API_BASE_URL = server.base_url
    school.currency = "KES"
    school.save()
    account = AccountFactory(school=school, provider="promptpay", webhook_secret="unused-secret", api_key=API_KEY)
    yield fake, account
    server.stop()
    registry._load.cache_clear()


from tests.s3 import s3_bucket, s3_server  # noqa: E402, F401 - fixtures (receipts in S3)
