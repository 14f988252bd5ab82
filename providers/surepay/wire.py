"""SurePay's webhooks (the generic aggregator scheme the adapter's docstring describes):
``X-Signature`` is the hex HMAC-SHA256 of the body keyed with the account's webhook secret;
the amount is a string of major units."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from core.money import from_minor
from providers.wire import Delivery, Params, dumps, hmac_hex

# The simulator's currency when none is given: None, the school's.
DEFAULT_CURRENCY = None
STARTED_CHECKOUTS_ONLY = ""

STATUSES = {
    "payment.succeeded": "SUCCEEDED",
    "payment.failed": "FAILED",
    "payment.pending": "PENDING",
    # Money going back to the payer: ``amount`` is what was reversed.
    "payment.reversed": "REVERSED",
}


def surepay_event(kind: str, p: Params) -> dict:
    status = STATUSES[kind]
    amount = (p.refunded_minor or p.amount_minor) if status == "REVERSED" else p.amount_minor
    return {
        "event_id": p.uid("evt-"),
        "external_txn_id": p.txn_id or f"txn-{uuid.uuid4().hex[:16]}",
        "amount": str(from_minor(amount, p.currency)),
        "currency": p.currency,
        "status": status,
        "provider_student_id": p.student_id or "prov-001",
    }


def surepay_delivery(payload: dict | bytes, secret: str) -> Delivery:
    body = payload if isinstance(payload, bytes) else dumps(payload)
    return Delivery(body, {"X-Signature": hmac_hex(secret.encode(), body)})


def signed_delivery(payload: dict | bytes, *, secret: str, payment_id=None) -> Delivery:
    return surepay_delivery(payload, secret)


EVENT_TYPES: dict[str, Callable[[Params], dict]] = {
    kind: (lambda p, kind=kind: surepay_event(kind, p)) for kind in STATUSES
}
