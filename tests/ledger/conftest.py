"""A school per currency, each connected to its own company in the fake QuickBooks, with one
student whose provider id maps without asking the directory: what the ledger tests need to check
the payment and its books together."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.utils import timezone

from payments.models import ProviderAccount, ProviderStudentLink, Student
from quickbooks_sync.models import QboConnection
from tests.factories import AccountFactory, SchoolFactory
from tests.quickbooks_sync.conftest import _fast_passwords, fake_qbo  # noqa: F401 - fixtures

STUDENT_ID = "prov-001"


@dataclass
class Books:
    school: object
    student: Student
    realm: str


@pytest.fixture
def books(db, fake_qbo):  # noqa: F811 - the imported fixture
    """``books(code, currency)``: a school connected to its own QuickBooks company."""
    made = {}

    def make(code: str, currency: str) -> Books:
        if code in made:
            return made[code]
        realm = f"9{len(made) + 1:03d}0000000001"
        fake_qbo.add_company(realm, name=f"{code} books", home_currency=currency)
        school = SchoolFactory(code=code, name=f"School {code}", currency=currency)
        access, refresh = fake_qbo.issue_tokens(realm)
        QboConnection.objects.create(
            school=school, realm_id=realm, company_name=f"{code} books", status=QboConnection.Status.CONNECTED,
            access_token=access, access_token_expires_at=timezone.now() + timedelta(hours=1),
            refresh_token=refresh, refresh_token_expires_at=timezone.now() + timedelta(days=100),
            tokens_refreshed_at=timezone.now(), item_id="1", item_name="School fees", deposit_account_id="35",
            deposit_account_name="Checking", home_currency=currency,
            sync_since=datetime(2000, 1, 1, tzinfo=dt_timezone.utc),
        )  # fmt: skip
        student = Student.objects.create(school=school, student_number=f"{code.upper()}-1", full_name="Amina Nakato")
        made[code] = Books(school, student, realm)
        return made[code]

    return make


def link_student(books: Books, provider: str) -> None:
    ProviderStudentLink.objects.get_or_create(
        school=books.school, provider=provider, provider_student_id=STUDENT_ID, defaults={"student": books.student}
    )


def provider_account(books: Books, provider: str, **fields):
    """The school's account with ``provider`` (the same one for every example of a property)."""
    link_student(books, provider)
    existing = ProviderAccount.objects.filter(school=books.school, provider=provider).first()
    return existing or AccountFactory(school=books.school, provider=provider, **fields)
