"""The dummy provider's webhooks (the format the adapter's docstring describes):
``X-Dummy-Signature: sha256=<hex HMAC-SHA256 of the body>`` keyed with the account's webhook
secret, amounts in ISO minor units.

The dummy provider is played by this service itself, so besides the simulator and the tests, its
own simulate page sends these (``DummyProvider.simulated_webhook``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from providers.wire import Delivery, Params, dumps, hmac_hex

# The simulator's currency when none is given: None, the school's.
DEFAULT_CURRENCY = None
STARTED_CHECKOUTS_ONLY = ""


def dummy_event(kind: str, p: Params) -> dict:
    data = {
        "txn_id": p.txn_id or f"dtxn_{uuid.uuid4().hex[:20]}",
        "reference": p.reference,
        "amount_minor": p.amount_minor,
        "currency": p.currency,
        "student_id": p.student_id,
    }
    if kind == "payment.refunded":
        data["refunded_minor"] = p.refunded_minor or p.amount_minor
    return {"id": p.uid("devt_"), "type": kind, "data": data}


def dummy_delivery(payload: dict | bytes, secret: str) -> Delivery:
    body = payload if isinstance(payload, bytes) else dumps(payload)
    return Delivery(body, {"X-Dummy-Signature": f"sha256={hmac_hex(secret.encode(), body)}"})


def signed_delivery(payload: dict | bytes, *, secret: str, payment_id=None) -> Delivery:
    return dummy_delivery(payload, secret)


EVENT_TYPES: dict[str, Callable[[Params], dict]] = {
    kind: (lambda p, kind=kind: dummy_event(kind, p))
    for kind in ("payment.succeeded", "payment.failed", "payment.refunded")
}
