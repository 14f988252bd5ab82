"""The payment state machine: every allowed transition, in one place.

``pending -> processing -> succeeded | failed | cancelled``; ``failed -> processing`` (a retry);
``succeeded -> refunded | partially_refunded``; manual payments start in ``awaiting_review``.

Events arrive late and out of order, so a transition that is not listed is never applied: a
``failed`` that arrives after ``succeeded`` is recorded and ignored. One rule outranks order:
money the provider confirms as received is never dropped, so a confirmed success is accepted
from any state that has not already succeeded (a payment that was marked failed, cancelled or
expired and then succeeds on a retry at the provider).
"""

from __future__ import annotations

from django.db import models


class PaymentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    AWAITING_REVIEW = "awaiting_review", "Awaiting review"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired"
    PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"
    REFUNDED = "refunded", "Refunded"


S = PaymentStatus

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.PROCESSING, S.SUCCEEDED, S.FAILED, S.CANCELLED, S.EXPIRED}),
    S.PROCESSING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.EXPIRED}),
    S.AWAITING_REVIEW: frozenset({S.SUCCEEDED, S.FAILED}),
    S.FAILED: frozenset({S.PROCESSING, S.SUCCEEDED}),
    S.CANCELLED: frozenset({S.SUCCEEDED}),
    S.EXPIRED: frozenset({S.SUCCEEDED}),
    S.SUCCEEDED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.PARTIALLY_REFUNDED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.REFUNDED: frozenset(),
}

# States in which the school has the money (or had it, before a refund).
SETTLED_STATES = frozenset({S.SUCCEEDED, S.PARTIALLY_REFUNDED, S.REFUNDED})
# States a payment can still leave without a refund: what a janitor or a retry may act on.
OPEN_STATES = frozenset({S.PENDING, S.PROCESSING, S.AWAITING_REVIEW})


def can_transition(current: str, target: str) -> bool:
    return target in ALLOWED_TRANSITIONS[current]
