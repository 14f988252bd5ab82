"""PayPal's webhooks as PayPal sends them (https://developer.paypal.com/api/rest/webhooks/rest/):
the event JSON, and the transmission headers with an RSA-SHA256 signature (SHA256withRSA) over
``<transmission id>|<transmission time>|<webhook id>|<CRC32 of the raw body, unsigned decimal>``.

PayPal's private key is PayPal's: this module signs with a key of its own, made when it is first
imported, and names a certificate URL on PayPal's sandbox host. The fake's
verify-webhook-signature (``fake.py``) knows that URL's key, as PayPal knows its own."""

from __future__ import annotations

import base64
import uuid
import zlib
from collections.abc import Callable
from datetime import datetime, timezone
from functools import cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from core.money import from_minor
from providers.wire import Delivery, Params, dumps

DEFAULT_CURRENCY = "USD"
STARTED_CHECKOUTS_ONLY = ""
CERT_URL = "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-wire0000"


@cache
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def signed_message(transmission_id: str, transmission_time: str, webhook_id: str, body: bytes) -> bytes:
    return f"{transmission_id}|{transmission_time}|{webhook_id}|{zlib.crc32(body)}".encode()


def _money(p: Params, minor: int | None = None) -> dict:
    return {"currency_code": p.currency, "value": str(from_minor(p.amount_minor if minor is None else minor, p.currency))}


def _links(kind: str, rid: str, up: str = "") -> list[dict]:
    links = [{"href": f"https://api.sandbox.paypal.com/v2/payments/{kind}/{rid}", "rel": "self", "method": "GET"}]
    if up:
        links.append({"href": up, "rel": "up", "method": "GET"})
    return links


def paypal_event(kind: str, p: Params) -> dict:
    capture_id = p.txn_id or uuid.uuid4().hex[:17].upper()
    order_id = p.checkout_id or uuid.uuid4().hex[:17].upper()
    base = {"id": p.uid("WH-"), "event_version": "1.0", "create_time": "2025-02-02T00:23:12.336Z",
            "resource_version": "2.0", "event_type": kind}  # fmt: skip
    if kind == "CHECKOUT.ORDER.APPROVED":
        resource = {"id": order_id, "intent": "CAPTURE", "status": "APPROVED",
                    "purchase_units": [{"reference_id": "default", "custom_id": p.reference, "amount": _money(p)}]}  # fmt: skip
        return {**base, "resource_type": "checkout-order", "summary": "An order has been approved by buyer", "resource": resource}
    if kind == "PAYMENT.CAPTURE.REFUNDED":
        resource = {"id": uuid.uuid4().hex[:17].upper(), "status": "COMPLETED",
                    "amount": _money(p, p.refunded_minor or p.amount_minor),
                    "links": _links("refunds", "R1", f"https://api.sandbox.paypal.com/v2/payments/captures/{capture_id}")}  # fmt: skip
        return {**base, "resource_type": "refund", "summary": "A capture payment was refunded", "resource": resource}
    if kind == "CUSTOMER.DISPUTE.CREATED":
        resource = {"dispute_id": f"PP-D-{uuid.uuid4().int % 100000}", "status": "OPEN", "reason": "UNAUTHORISED",
                    "dispute_amount": _money(p),
                    "disputed_transactions": [{"seller_transaction_id": capture_id}]}  # fmt: skip
        return {**base, "resource_type": "dispute", "summary": "A new dispute opened", "resource": resource}
    status = {"PAYMENT.CAPTURE.COMPLETED": "COMPLETED", "PAYMENT.CAPTURE.DENIED": "DECLINED",
              "PAYMENT.CAPTURE.PENDING": "PENDING"}[kind]  # fmt: skip
    resource = {"id": capture_id, "status": status, "amount": _money(p), "final_capture": True,
                "custom_id": p.reference, "supplementary_data": {"related_ids": {"order_id": order_id}},
                "links": _links("captures", capture_id)}  # fmt: skip
    return {**base, "resource_type": "capture", "summary": f"Payment {status.lower()}", "resource": resource}


def paypal_delivery(payload: dict | bytes, webhook_id: str, *, cert_url: str = CERT_URL) -> Delivery:
    body = payload if isinstance(payload, bytes) else dumps(payload)
    transmission_id = str(uuid.uuid1())
    transmission_time = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    signature = signing_key().sign(
        signed_message(transmission_id, transmission_time, webhook_id, body), padding.PKCS1v15(), hashes.SHA256()
    )
    return Delivery(body, {
        "paypal-transmission-id": transmission_id,
        "paypal-transmission-time": transmission_time,
        "paypal-transmission-sig": base64.b64encode(signature).decode(),
        "paypal-cert-url": cert_url,
        "paypal-auth-algo": "SHA256withRSA",
    })  # fmt: skip


def signed_delivery(payload: dict | bytes, *, secret: str, payment_id=None) -> Delivery:
    return paypal_delivery(payload, secret)


EVENT_TYPES: dict[str, Callable[[Params], dict]] = {
    kind: (lambda p, kind=kind: paypal_event(kind, p))
    for kind in ("PAYMENT.CAPTURE.COMPLETED", "PAYMENT.CAPTURE.DENIED", "PAYMENT.CAPTURE.PENDING",
                 "PAYMENT.CAPTURE.REFUNDED", "CHECKOUT.ORDER.APPROVED", "CUSTOMER.DISPUTE.CREATED")
}  # fmt: skip
