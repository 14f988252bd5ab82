"""Omise's webhooks as Omise sends them (https://docs.omise.co/api-webhooks):
``Omise-Signature`` is the hex HMAC-SHA256 of ``"<timestamp>." + body`` keyed with the
base64-decoded webhook secret, ``Omise-Signature-Timestamp`` the Unix seconds."""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Callable

from providers.wire import Delivery, Params, dumps, hmac_hex

# The simulator's currency when none is given: one Omise takes (the school's may not be).
DEFAULT_CURRENCY = "THB"
STARTED_CHECKOUTS_ONLY = ""


def omise_key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        return secret.encode()


def omise_event(kind: str, p: Params) -> dict:
    charge_id = p.txn_id or p.uid("chrg_test_")
    if kind == "refund.create":
        data = {
            "object": "refund",
            "id": f"rfnd_test_{uuid.uuid4().hex[:19]}",
            "livemode": not p.test_mode,
            "amount": p.refunded_minor or p.amount_minor,
            "currency": p.currency.lower(),
            "charge": charge_id,
            "created_at": "2025-01-16T10:00:00Z",
        }
    else:
        status = {"charge.complete": "successful", "charge.failed": "failed"}.get(kind, "pending")
        data = {
            "object": "charge",
            "id": charge_id,
            "livemode": not p.test_mode,
            "amount": p.amount_minor,
            "currency": p.currency.lower(),
            "status": status,
            "paid": status == "successful",
            "refunded_amount": 0,
            "metadata": {"reference": p.reference, "student_id": p.student_id} if p.reference else {},
        }
        kind = "charge.complete" if kind == "charge.failed" else kind
    return {
        "object": "event",
        "id": f"evnt_test_{uuid.uuid4().hex[:19]}" if not p.event_id else p.event_id,
        "livemode": not p.test_mode,
        "key": kind,
        "created_at": "2025-01-15T09:10:19Z",
        "data": data,
    }


def omise_delivery(payload: dict | bytes, secrets: list[str], timestamp: int | None = None) -> Delivery:
    body = payload if isinstance(payload, bytes) else dumps(payload)
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + body
    signatures = ",".join(hmac_hex(omise_key(s), signed) for s in secrets)
    return Delivery(body, {"Omise-Signature": signatures, "Omise-Signature-Timestamp": str(timestamp)})


def signed_delivery(payload: dict | bytes, *, secret: str, payment_id=None) -> Delivery:
    return omise_delivery(payload, [secret])


EVENT_TYPES: dict[str, Callable[[Params], dict]] = {
    kind: (lambda p, kind=kind: omise_event(kind, p)) for kind in ("charge.complete", "charge.failed", "refund.create")
}
