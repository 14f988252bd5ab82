"""Stripe's webhooks as Stripe sends them: ``Stripe-Signature: t=<unix>,v1=<hex>`` over
``"<t>." + body`` (https://docs.stripe.com/webhooks#verify-manually), written without the SDK."""

from __future__ import annotations

import time
from collections.abc import Callable

from providers.stripe.adapter import to_stripe_amount  # the unit table is a fact, shared on purpose
from providers.wire import Delivery, Params, dumps, hmac_hex

# The simulator's currency when none is given: None, the school's.
DEFAULT_CURRENCY = None
STARTED_CHECKOUTS_ONLY = ""


def stripe_signature_header(body: bytes, secrets: list[str], timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + body
    return ",".join([f"t={timestamp}"] + [f"v1={hmac_hex(s.encode(), signed)}" for s in secrets])


def stripe_stripe_amount(p: Params) -> int:
    return to_stripe_amount(p.amount_minor, p.currency)


def stripe_event(kind: str, p: Params) -> dict:
    amount = stripe_stripe_amount(p)
    metadata = {"reference": p.reference, "student_id": p.student_id} if p.reference else {}
    if kind.startswith("checkout.session."):
        paid = kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded")
        obj = {
            "id": p.checkout_id or p.uid("cs_test_"),
            "object": "checkout.session",
            "mode": "payment",
            "status": "expired" if kind.endswith("expired") else "complete",
            "payment_status": "paid" if paid else "unpaid",
            "amount_total": amount,
            "currency": p.currency.lower(),
            "client_reference_id": p.reference or None,
            "metadata": metadata,
            "payment_intent": None if kind.endswith("expired") else (p.txn_id or p.uid("pi_")),
            "customer_details": {"email": "parent@example.com", "name": "Ada Obi", "phone": None},
        }
    elif kind == "charge.refunded":
        refunded = p.refunded_minor or p.amount_minor
        obj = {
            "id": p.uid("ch_"),
            "object": "charge",
            "amount": amount,
            "amount_refunded": to_stripe_amount(refunded, p.currency),
            "currency": p.currency.lower(),
            "payment_intent": p.txn_id or p.uid("pi_"),
            "refunded": refunded == p.amount_minor,
            "metadata": {},
        }
    elif kind.startswith("payment_intent."):
        obj = {
            "id": p.txn_id or p.uid("pi_"),
            "object": "payment_intent",
            "amount": amount,
            "currency": p.currency.lower(),
            "status": "succeeded" if kind.endswith("succeeded") else "requires_payment_method",
            "metadata": metadata,
        }
    else:
        obj = {"id": p.uid("obj_"), "object": "customer"}
    return {
        "id": p.uid("evt_"),
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "livemode": not p.test_mode,
        "type": kind,
        "data": {"object": obj},
    }


def stripe_delivery(payload: dict | bytes, secrets: list[str], timestamp: int | None = None) -> Delivery:
    body = payload if isinstance(payload, bytes) else dumps(payload)
    return Delivery(body, {"Stripe-Signature": stripe_signature_header(body, secrets, timestamp)})


def signed_delivery(payload: dict | bytes, *, secret: str, payment_id=None) -> Delivery:
    return stripe_delivery(payload, [secret])


EVENT_TYPES: dict[str, Callable[[Params], dict]] = {
    kind: (lambda p, kind=kind: stripe_event(kind, p))
    for kind in ("checkout.session.completed", "checkout.session.async_payment_failed", "checkout.session.expired",
                 "payment_intent.succeeded", "charge.refunded", "customer.created")
}
