"""Manual payments: reported by a parent (bank transfer, mobile money, cash), reviewed by staff."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from core.status import PaymentStatus
from payments import locks, outbox, receipts, selectors
from payments.audit import audit_record
from payments.ledger import FactSource
from payments.models import (
    MANUAL_METHODS,
    MANUAL_PROVIDER,
    AuditLog,
    MappingStatus,
    Payment,
    PaymentMethod,
    PaymentRequest,
)
from payments.services.checkout import CheckoutRefused, payment_insert_with_reference
from payments.services.settlement import payment_fact_add

logger = logging.getLogger(__name__)

# --- Manual payments: reported by a parent, reviewed by staff ------------------------------------


class ManualPaymentInvalid(Exception):
    """``errors`` maps a form field to a message that is safe to show the parent."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))


class ReviewError(Exception):
    """The review cannot be recorded (already reviewed, not a manual payment, no note)."""


def manual_payment_submit(
    *,
    payment_request_id: int,
    method: str,
    manual_reference: str,
    amount_minor: int,
    receipt: UploadedFile | None = None,
    payer: Mapping[str, Any] | None = None,
) -> Payment:
    """A parent reports a bank transfer, mobile-money or cash payment. It waits as
    ``awaiting_review`` until staff confirm it (``manual_payment_review``); the request stays
    open meanwhile. A receipt, when given, must be a PDF or an image within the size limit."""
    errors: dict[str, str] = {}
    if method not in MANUAL_METHODS:
        errors["method"] = "Choose bank transfer, mobile money or cash."
    reference = (manual_reference or "").strip()
    if method != PaymentMethod.CASH and not reference:
        errors["reference"] = "Enter the reference of your transfer."
    if len(reference) > 128:
        errors["reference"] = "At most 128 characters."
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        errors["amount"] = "Enter the amount you paid."
    kind = None
    if receipt is not None:
        try:
            kind = receipts.receipt_check(receipt)
        except receipts.ReceiptInvalid as exc:
            errors["receipt"] = str(exc)
    if errors:
        raise ManualPaymentInvalid(errors)

    receipt_name = ""
    if receipt is not None and kind is not None:
        # Stored before the transaction: with object storage this is a network call, never made
        # while the request's row is locked. A refused report deletes it again.
        school_code = PaymentRequest.objects.filter(pk=payment_request_id).values_list("school__code", flat=True).get()
        receipt_name = receipts.receipt_store(school_code=school_code, file=receipt, kind=kind)
    try:
        return _manual_payment_insert(
            payment_request_id=payment_request_id,
            method=method,
            reference=reference,
            amount_minor=amount_minor,
            receipt_name=receipt_name,
            receipt_content_type=kind.content_type if receipt_name and kind else "",
            payer=payer,
        )
    except BaseException:
        if receipt_name:
            receipts.receipt_discard(receipt_name)
        raise


def _manual_payment_insert(
    *,
    payment_request_id: int,
    method: str,
    reference: str,
    amount_minor: int,
    receipt_name: str,
    receipt_content_type: str,
    payer: Mapping[str, Any] | None,
) -> Payment:
    with transaction.atomic():
        payment_request = locks.payment_request(payment_request_id, related=("school", "student"))
        if payment_request.status != PaymentRequest.Status.OPEN:
            raise CheckoutRefused("request_closed", "This payment request is no longer open.")
        waiting = payment_request.payments.filter(status=PaymentStatus.AWAITING_REVIEW).count()
        if waiting >= settings.MANUAL_PAYMENTS_PENDING_MAX:
            raise CheckoutRefused(
                "too_many_reports", "The school has not yet checked the payments you reported. Please wait for them."
            )
        now = timezone.now()
        payment = Payment(
            school=payment_request.school,
            account=None,
            provider=MANUAL_PROVIDER,
            amount_minor=amount_minor,
            currency=payment_request.currency,
            status=PaymentStatus.AWAITING_REVIEW,
            status_changed_at=now,
            payment_request=payment_request,
            method=method,
            manual_reference=reference,
            student=payment_request.student,
            provider_student_id=payment_request.student.student_number,
            mapping_status=MappingStatus.MAPPED,
            payer=dict(payer or {}),
        )
        if receipt_name:
            payment.receipt = receipt_name
            payment.receipt_content_type = receipt_content_type
        payment_insert_with_reference(payment, prefix="M")
        outbox.payment_events_record(
            payment=payment, created=True, previous=None, actor_type=AuditLog.ActorType.PARENT, action="payment.manual_reported"
        )
        audit_record(
            action="payment.manual_reported",
            actor_type=AuditLog.ActorType.PARENT,
            school_id=payment.school_id,
            target=payment,
            details={
                "payment_request_id": payment_request.pk,
                "method": method,
                "manual_reference": reference,
                "amount_minor": amount_minor,
                "currency": payment.currency,
                "receipt": receipt_content_type or None,
            },
        )
    return payment


def manual_payment_review(
    *, payment_id: uuid.UUID, decision: Literal["confirm", "reject"], note: str, reviewer
) -> Payment:
    """Staff confirm or reject a manual payment, with a note. A confirmation makes the payment
    succeed and settles its request through ``payment_finalize``, as a provider's success does;
    a rejection fails it and leaves the request open."""
    note = (note or "").strip()
    if decision not in ("confirm", "reject"):
        raise ReviewError("Choose confirm or reject.")
    if not note:
        raise ReviewError("Write a note: what you checked, or why you reject it.")
    with transaction.atomic():
        payment = locks.payment(payment_id)
        if not payment.is_manual:
            raise ReviewError("Only manual payments are reviewed here.")
        if payment.status != PaymentStatus.AWAITING_REVIEW:
            raise ReviewError(f"This payment was already reviewed ({payment.get_status_display().lower()}).")
        if not selectors.user_can_access_school(user=reviewer, school_id=payment.school_id):
            raise ReviewError("You are not staff of this payment's school.")
        payment.reviewed_by = reviewer
        payment.reviewed_at = timezone.now()
        payment.review_note = note
        payment.save(update_fields=["reviewed_by", "reviewed_at", "review_note", "updated_at"])
        # Confirming settles its request (payment_finalize), as a provider's success does.
        payment_fact_add(
            payment=payment,
            status=PaymentStatus.SUCCEEDED if decision == "confirm" else PaymentStatus.FAILED,
            amount_minor=payment.amount_minor if decision == "confirm" else None,
            source=FactSource.STAFF,
            source_ref=reviewer.get_username(),
            actor_type=AuditLog.ActorType.STAFF,
            actor=reviewer.get_username(),
            audit_action="payment.reviewed",
            details={"decision": decision, "note": note[:1000]},
        )
    return payment
