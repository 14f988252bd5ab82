"""Installments in QuickBooks: each part is its own payment, booked on its own as a Payment
linked to the student's invoice, whose balance falls part by part."""

from __future__ import annotations

import pytest

from quickbooks_sync import services
from quickbooks_sync.models import QboPaymentSync, SyncStatus
from tests.quickbooks_sync.conftest import REALM, customer_for, ready_payment

pytestmark = pytest.mark.django_db


def sync(payment) -> QboPaymentSync:
    services.qbo_sync_request(payment_id=payment.pk)
    services.qbo_school_sync(school_id=payment.school_id)
    return QboPaymentSync.objects.get(payment=payment)


def test_two_parts_are_two_payments_on_the_same_invoice(account, student, connection, fake_qbo):
    customer = customer_for(fake_qbo, "Amina Nakato (STU-0001)")
    invoice = fake_qbo.add_invoice(REALM, customer_id=customer["Id"], amount=450_000)
    first = sync(ready_payment(account, student, 200_000))
    second = sync(ready_payment(account, student, 250_000))
    assert (first.status, second.status) == (SyncStatus.SYNCED, SyncStatus.SYNCED)
    booked = fake_qbo.objects(REALM, "Payment")
    assert [(p["TotalAmt"], p["Line"]) for p in booked] == [
        (200_000, [{"Amount": 200_000, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}]),
        (250_000, [{"Amount": 250_000, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}]),
    ]
    (stored_invoice,) = fake_qbo.objects(REALM, "Invoice")
    assert stored_invoice["Balance"] == 0
