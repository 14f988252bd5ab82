"""Flutterwave's webhooks as Flutterwave sends them
(https://developer.flutterwave.com/docs/webhooks): ``verif-hash`` is the secret hash itself."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal

from core.money import from_minor
from providers.wire import Delivery, Params, dumps

# The simulator's currency when none is given: None, the school's.
DEFAULT_CURRENCY = None
STARTED_CHECKOUTS_ONLY = ""


def flutterwave_event(kind: str, p: Params) -> dict:
    txn_id = int(p.txn_id or str(uuid.uuid4().int)[:9])
    if kind == "refund":
        return {
            "id": int(str(uuid.uuid4().int)[:6]),
            "AmountRefunded": from_minor(p.refunded_minor or p.amount_minor, p.currency),
            "status": "completed",
            "FlwRef": f"URF_{uuid.uuid4().hex[:13]}",
            "destination": "payment_source",
            "comments": "Refund",
            "settlement_id": "NEW",
            "meta": "{\"source\":\"availablebalance\"}",
            "createdAt": "2025-01-16T10:00:00.000Z",
            "TransactionId": txn_id,
        }
    status = {"charge.completed": "successful", "charge.failed": "failed"}.get(kind, "successful")
    return {
        "event": "charge.completed",
        "data": {
            "id": txn_id,
            "tx_ref": p.reference or f"tx-{uuid.uuid4().hex[:12]}",
            "flw_ref": f"FLW-MOCK-{uuid.uuid4().hex[:16]}",
            "device_fingerprint": "N/A",
            "amount": from_minor(p.amount_minor, p.currency),
            "currency": p.currency,
            "charged_amount": from_minor(p.amount_minor, p.currency),
            "app_fee": Decimal("350"),
            "merchant_fee": 0,
            "processor_response": "Approved" if status == "successful" else "Declined",
            "auth_model": "PIN",
            "status": status,
            "payment_type": "card",
            "created_at": "2025-01-15T09:23:03.000Z",
            "account_id": 2508309,
            "customer": {"id": 2571514, "name": "Ada Obi", "phone_number": None, "email": "parent@example.com",
                         "created_at": "2025-01-15T09:22:55.000Z"},
            **({"meta": {"student_id": p.student_id}} if p.student_id else {}),
        },
        "event.type": "CARD_TRANSACTION",
    }


def flutterwave_delivery(payload: dict | bytes, secret_hash: str) -> Delivery:
    body = payload if isinstance(payload, bytes) else dumps(payload)
    return Delivery(body, {"verif-hash": secret_hash})


def signed_delivery(payload: dict | bytes, *, secret: str, payment_id=None) -> Delivery:
    return flutterwave_delivery(payload, secret)


EVENT_TYPES: dict[str, Callable[[Params], dict]] = {
    kind: (lambda p, kind=kind: flutterwave_event(kind, p)) for kind in ("charge.completed", "charge.failed", "refund")
}
