"""Risk scores kept on payments (the rules: ``payments.risk``). Staff clearing a flagged payment
is ``settlement.payment_risk_clear``: it offers the payment to the books."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.db import transaction

from payments import locks, risk
from payments.models import Payment


def payment_risk_update(payment: Payment, put: Callable[[str, Any], None], facts=None) -> None:
    """Score the locked payment again (inside ``payment_settle``) and set its flag and hold. A
    clearance stands until the score rises: new signs after a staff member looked need a new look.
    ``facts``: all of the payment's facts, when the caller holds them."""
    assessment = risk.payment_risk_assess(payment, facts=facts)
    if payment.risk_cleared_at is not None and assessment.score > (payment.risk_score or 0):
        put("risk_cleared_at", None)
        put("risk_cleared_by", "")
    flagged = assessment.flagged(risk.threshold_for(payment.school))
    put("risk_score", assessment.score)
    put("risk_reasons", [reason.as_json() for reason in assessment.reasons])
    put("risk_flagged", flagged)
    put("risk_held", flagged and payment.school.risk_hold_from_books and payment.risk_cleared_at is None)


def payment_risk_rescore(*, payment_id: uuid.UUID) -> None:
    """Score a payment again outside a settlement (it was just mapped to a student), inside the
    caller's transaction, so a hold is in place before the books are offered it on commit."""
    with transaction.atomic():
        payment = locks.payment(payment_id, related=("school",))
        changed: set[str] = set()

        def put(name: str, value: Any) -> None:
            if getattr(payment, name) != value:
                setattr(payment, name, value)
                changed.add(name)

        payment_risk_update(payment, put)
        if changed:
            payment.save(update_fields=sorted(changed | {"updated_at"}))
