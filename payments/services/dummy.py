"""The dummy provider's checkout page (development and demos): what the payer chose."""

from __future__ import annotations

import logging
import secrets
import uuid
from typing import Literal

from django.db import transaction
from django.utils import timezone

from payments import locks
from payments.models import (
    Payment,
    PaymentMethod,
)

logger = logging.getLogger(__name__)

# --- The dummy provider's checkout page ------------------------------------------------------------


def dummy_payment_simulate(
    *, payment_id: uuid.UUID, outcome: Literal["succeeded", "failed"], amount_minor: int | None = None
) -> Payment:
    """Record what the payer did on the dummy provider's checkout page: this is the dummy
    "provider's" own state, which its ``fetch_status`` reads back. The first answer is final,
    as at a real provider (a double click does not pay twice)."""
    if outcome not in ("succeeded", "failed"):
        raise ValueError(f"unknown outcome {outcome!r}")
    with transaction.atomic():
        payment = locks.payment(payment_id)
        if payment.provider != "dummy" or payment.method != PaymentMethod.PROVIDER:
            raise Payment.DoesNotExist(f"payment {payment_id} is not a dummy provider payment")
        if "dummy" not in payment.provider_data:
            payment.provider_data = {
                **payment.provider_data,
                "dummy": {
                    "outcome": outcome,
                    "txn_id": f"dtxn_{secrets.token_hex(8)}",
                    "amount_minor": payment.amount_minor if amount_minor is None else amount_minor,
                    "currency": payment.currency,
                    "at": timezone.now().isoformat(),
                },
            }
            payment.save(update_fields=["provider_data", "updated_at"])
    return payment
