"""A success settles its payment request, or is flagged for staff."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from django.db import transaction
from django.utils import timezone

from core.money import format_minor
from payments import locks, selectors
from payments.audit import audit_record
from payments.models import (
    Payment,
    PaymentRequest,
    ReviewFlag,
)

logger = logging.getLogger(__name__)

# --- Finalizing: a success settles its request ----------------------------------------------------


@dataclass(frozen=True)
class FinalizeOutcome:
    result: Literal["paid", "part_paid", "amount_mismatch", "overpayment", "already_finalized"]
    reason: str

    @property
    def summary(self) -> str:
        if self.result == "part_paid":
            return "part of the request paid"
        return "request paid" if self.result == "paid" else f"request not settled: {self.result}"


def payment_finalize(*, payment: Payment, actor_type: str, actor: str = "") -> FinalizeOutcome:
    """Settle the payment request of a payment that has just succeeded.

    Runs inside the caller's transaction with the payment row locked (every path that makes a
    payment succeed comes here: webhooks, API confirmations, the janitor, staff confirming a
    manual payment). Locks the request row, then:

    - amount and currency exactly as requested, request open: the request is paid by this
      payment, in this transaction;
    - a request that may be paid in parts: the payment counts toward it up to the balance
      (``applied_minor``); the part that reaches the amount pays the request; more than the
      balance is kept and flagged ``overpayment``;
    - a different amount (not in parts) or currency: the request stays open, the payment is
      flagged ``amount_mismatch`` for staff;
    - the request is already paid by another payment (or cancelled): the money is kept, the
      payment is flagged ``overpayment`` for staff.

    Every outcome writes ``payment.finalize`` with the reason.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("payment_finalize runs inside the caller's transaction, payment row locked")
    # Lock order everywhere: payment, then its request.
    payment_request = locks.payment_request(payment.payment_request_id)
    paid = format_minor(payment.amount_minor, payment.currency)
    due = format_minor(payment_request.amount_minor, payment_request.currency)
    flag = ""
    if payment.applied_minor or (
        payment_request.status == PaymentRequest.Status.PAID and payment_request.paid_payment_id == payment.pk
    ):
        return FinalizeOutcome("already_finalized", "this payment already counted toward the request")
    terms = selectors.request_installments(payment_request=payment_request)
    if payment_request.status == PaymentRequest.Status.PAID:
        outcome = FinalizeOutcome(
            "overpayment", f"{paid} received, but the request was already paid by payment {payment_request.paid_payment_id}"
        )
        flag = ReviewFlag.OVERPAYMENT
    elif payment_request.status == PaymentRequest.Status.CANCELLED:
        outcome = FinalizeOutcome("overpayment", f"{paid} received for a cancelled request")
        flag = ReviewFlag.OVERPAYMENT
    elif payment.currency != payment_request.currency or (
        not terms.allowed and payment.amount_minor != payment_request.amount_minor
    ):
        outcome = FinalizeOutcome("amount_mismatch", f"{paid} received, {due} requested")
        flag = ReviewFlag.AMOUNT_MISMATCH
    else:
        # A part (or the whole): it counts up to the balance; more than the balance pays the
        # request and the rest is kept and flagged, as a payment to a paid request is.
        balance = terms.balance_minor
        payment.applied_minor = min(payment.amount_minor, balance)
        payment.save(update_fields=["applied_minor", "updated_at"])
        settled = payment.applied_minor == balance
        if payment.amount_minor > balance:
            extra = format_minor(payment.amount_minor - balance, payment.currency)
            outcome = FinalizeOutcome(
                "overpayment", f"{paid} received, {format_minor(balance, payment.currency)} was due: {extra} over"
            )
            flag = ReviewFlag.OVERPAYMENT
        elif settled:
            outcome = FinalizeOutcome("paid", f"{paid} received as requested" if payment.amount_minor == payment_request.amount_minor else f"{paid} received, the last part of {due}")
        else:
            left = format_minor(balance - payment.applied_minor, payment.currency)
            outcome = FinalizeOutcome("part_paid", f"{paid} received, {left} of {due} still due")
        if settled:
            payment_request.status = PaymentRequest.Status.PAID
            payment_request.paid_payment = payment
            payment_request.paid_at = timezone.now()
            payment_request.save(update_fields=["status", "paid_payment", "paid_at", "updated_at"])
            audit_record(
                action="payment_request.paid",
                actor_type=actor_type,
                actor=actor,
                school_id=payment_request.school_id,
                target=payment_request,
                details={"payment_id": str(payment.pk)},
            )
    if flag:
        payment.review_flag = flag
        payment.review_flag_reason = outcome.reason
        payment.save(update_fields=["review_flag", "review_flag_reason", "updated_at"])
    audit_record(
        action="payment.finalize",
        actor_type=actor_type,
        actor=actor,
        school_id=payment.school_id,
        target=payment,
        details={
            "result": outcome.result,
            "reason": outcome.reason,
            "payment_request_id": payment_request.pk,
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
            "requested_minor": payment_request.amount_minor,
            "requested_currency": payment_request.currency,
        },
    )
    return outcome
