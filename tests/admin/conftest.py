"""Two schools with one of everything, and staff users of each: the world of the admin tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from django.contrib.auth import get_user_model

from events.models import EndpointDelivery, WebhookEndpoint
from payments.models import AuditLog, RefundRequest, StaffMembership, WebhookEvent
from payments.staff import staff_group_ensure
from quickbooks_sync.models import QboAdjustmentSync, QboConnection, QboCustomer
from tests.factories import (
    AccountFactory,
    PaymentFactory,
    PaymentRequestFactory,
    PaymentSyncFactory,
    SchoolFactory,
    StudentFactory,
)

PASSWORD = "correct horse battery"


@dataclass
class SchoolRows:
    """One row of every school-owned model; ``marker`` is a string each row's list shows."""

    school: object
    marker: str
    rows: dict = field(default_factory=dict)


def _school_rows(code: str, currency: str) -> SchoolRows:
    school = SchoolFactory(code=code, name=f"School {code.upper()}", currency=currency)
    account = AccountFactory(school=school, provider="surepay", webhook_secret=f"{code}-secret")
    student = StudentFactory(school=school, student_number=f"{code.upper()}-STU-1", full_name=f"Pupil {code}")
    payment_request = PaymentRequestFactory(school=school, student=student, description=f"{code} term fees")
    payment = PaymentFactory(
        account=account, external_txn_id=f"{code}-txn-1", provider_student_id=f"{code}-prov-1", status="succeeded"
    )
    event = WebhookEvent.objects.create(
        account=account, external_event_id=f"{code}-evt-1", raw_body="{}", status=WebhookEvent.Status.FAILED
    )
    audit = AuditLog.objects.create(
        school=school, actor_type="system", action=f"{code}.tested", target_type="School", target_id=str(school.pk)
    )
    connection = QboConnection.objects.create(school=school, realm_id=f"{code}-realm", company_name=f"{code} books")
    sync = PaymentSyncFactory(payment=payment, status="failed", last_error=f"{code}-sync-error")
    refund_sync = QboAdjustmentSync.objects.create(
        payment=payment, school=school, txn_date=sync.txn_date, amount_minor=100, currency=currency,
        movement="refund:re_1", direction="out", status="failed", last_error=f"{code}-refund-error",
    )  # fmt: skip
    customer = QboCustomer.objects.create(
        school=school, realm_id=f"{code}-realm", student=student, customer_id=f"{code}-cust", display_name=f"{code} cust"
    )
    refund = RefundRequest.objects.create(
        school=school, payment=payment, method="manual", amount_minor=100, currency=currency, reason=f"{code} refund",
        idempotency_key=f"refund-{code}", status="succeeded",
    )  # fmt: skip
    endpoint = WebhookEndpoint.objects.create(school=school, url=f"https://{code}.example.org/hooks", secret="whsec_c2VjcmV0")
    delivery = EndpointDelivery.objects.create(
        endpoint=endpoint, event_id=uuid.uuid4(), event_type="payment.succeeded", body="{}", status="failed"
    )
    rows = {
        "webhookendpoint": endpoint,
        "endpointdelivery": delivery,
        "refundrequest": refund,
        "school": school,
        "provideraccount": account,
        "student": student,
        "paymentrequest": payment_request,
        "payment": payment,
        "webhookevent": event,
        "auditlog": audit,
        "qboconnection": connection,
        "qbopaymentsync": sync,
        "qboadjustmentsync": refund_sync,
        "qbocustomer": customer,
        "transactionfact": payment.facts.get(),
    }
    return SchoolRows(school=school, marker=code, rows=rows)


@pytest.fixture
def world(db):
    a, b = _school_rows("aaa", "UGX"), _school_rows("bbb", "KES")
    return a, b


def make_school_staff(username: str, *schools):
    user = get_user_model().objects.create_user(username=username, password=PASSWORD, is_staff=True)
    user.groups.add(staff_group_ensure())
    for school in schools:
        StaffMembership.objects.create(user=user, school=school)
    return user


@pytest.fixture
def staff_a(world):
    return make_school_staff("bursar-a", world[0].school)


@pytest.fixture
def client_a(client, staff_a):
    client.force_login(staff_a)
    return client


