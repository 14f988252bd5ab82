"""Chapa's webhooks as Chapa sends them (https://developer.chapa.co/integrations/webhooks):
``x-chapa-signature`` is the hex HMAC-SHA256 of the body keyed with the secret hash, and
``chapa-signature`` the HMAC of the secret itself."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from core.money import from_minor
from providers.wire import Delivery, Params, dumps, hmac_hex

# The simulator's currency when none is given: one Chapa takes (the school's may not be).
DEFAULT_CURRENCY = "ETB"
STARTED_CHECKOUTS_ONLY = ""


def chapa_event(kind: str, p: Params) -> dict:
    return {
        "event": kind,
        "first_name": "Abebe",
        "last_name": "Bikila",
        "email": None,
        "mobile": "251900000000",
        "currency": p.currency,
        "amount": str(from_minor(p.refunded_minor or p.amount_minor, p.currency)) if kind == "charge.refunded" else str(from_minor(p.amount_minor, p.currency)),
        "charge": "135.00",
        "status": {"charge.success": "success", "charge.refunded": "refunded"}.get(kind, "failed"),
        "mode": "test" if p.test_mode else "live",
        "reference": p.txn_id or f"AP{uuid.uuid4().hex[:10]}",
        "created_at": "2025-01-15T19:21:18.000000Z",
        "updated_at": p.extra.get("updated_at", "2025-01-15T19:21:27.000000Z"),
        "type": "API",
        "tx_ref": p.reference or f"tx-{uuid.uuid4().hex[:12]}",
        "payment_method": "telebirr",
        "customization": {"title": None, "description": None, "logo": None},
        "meta": {"student_id": p.student_id} if p.student_id else None,
    }


def chapa_delivery(payload: dict | bytes, secret: str) -> Delivery:
    body = payload if isinstance(payload, bytes) else dumps(payload)
    return Delivery(
        body,
        {
            "x-chapa-signature": hmac_hex(secret.encode(), body),
            "chapa-signature": hmac_hex(secret.encode(), secret.encode()),
        },
    )


def signed_delivery(payload: dict | bytes, *, secret: str, payment_id=None) -> Delivery:
    return chapa_delivery(payload, secret)


EVENT_TYPES: dict[str, Callable[[Params], dict]] = {
    kind: (lambda p, kind=kind: chapa_event(kind, p))
    for kind in ("charge.success", "charge.failed/cancelled", "charge.refunded")
}
