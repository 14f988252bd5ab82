"""Paystack's webhooks as Paystack sends them: ``x-paystack-signature`` is the hex
HMAC-SHA512 of the body keyed with the secret API key (https://paystack.com/docs/payments/webhooks)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable

from providers.wire import Delivery, Params, dumps, hmac_hex

# The simulator's currency when none is given: one Paystack takes (the school's may not be).
DEFAULT_CURRENCY = "NGN"
STARTED_CHECKOUTS_ONLY = ""


def paystack_event(kind: str, p: Params) -> dict:
    domain = "test" if p.test_mode else "live"
    if kind.startswith("refund."):
        # As Paystack's samples show: no refund id; refund_reference only once processed or failed.
        state = kind.split(".", 1)[1]
        data = {
            "status": state,
            "transaction_reference": p.reference,
            "refund_reference": (p.event_id or f"RF{uuid.uuid4().hex[:10].upper()}")
            if state in ("processed", "failed")
            else None,
            "amount": str(p.refunded_minor or p.amount_minor),
            "currency": p.currency,
            "domain": domain,
            "integration": 100032,
        }
    elif kind.startswith("charge."):
        data = {
            "id": int(p.txn_id or str(uuid.uuid4().int)[:9]),
            "domain": domain,
            "status": "success" if kind == "charge.success" else "failed",
            "reference": p.reference or f"ref-{uuid.uuid4().hex[:12]}",
            "amount": p.amount_minor,
            "currency": p.currency,
            "channel": "card",
            "gateway_response": "Successful" if kind == "charge.success" else "Declined",
            "paid_at": "2025-01-15T09:10:19.000Z",
            "metadata": {"student_id": p.student_id} if p.student_id else "",
            "customer": {"email": "parent@example.com", "customer_code": "CUS_qo38as2hpsgk2r0"},
        }
    else:
        data = {"id": int(str(uuid.uuid4().int)[:8]), "domain": domain, "status": "success", "amount": p.amount_minor,
                "currency": p.currency, "transfer_code": f"TRF_{uuid.uuid4().hex[:10]}"}
    return {"event": kind, "data": data}


def paystack_delivery(payload: dict | bytes, secret_key: str) -> Delivery:
    body = payload if isinstance(payload, bytes) else dumps(payload)
    return Delivery(body, {"x-paystack-signature": hmac_hex(secret_key.encode(), body, hashlib.sha512)})


def signed_delivery(payload: dict | bytes, *, secret: str, payment_id=None) -> Delivery:
    return paystack_delivery(payload, secret)


EVENT_TYPES: dict[str, Callable[[Params], dict]] = {
    kind: (lambda p, kind=kind: paystack_event(kind, p))
    for kind in ("charge.success", "charge.failed", "refund.processed", "transfer.success")
}
