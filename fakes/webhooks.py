"""Provider-format webhook deliveries, signed the way each provider signs them.

Used by the fake provider servers, the tests and ``manage.py simulate_webhook``. The signing here
is written from each provider's documentation independently of ``providers/`` (and of the
stripe SDK), so a test that sends one of these through the endpoint checks our verification
against the documented scheme, not against itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from core.money import from_minor


@dataclass(frozen=True)
class Delivery:
    body: bytes
    headers: dict[str, str]
    query: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Params:
    """What a simulated event says. Amounts are ISO minor units; each builder writes them in
    its provider's own unit."""

    amount_minor: int = 150_000
    currency: str = "USD"
    reference: str = ""
    event_id: str = ""
    txn_id: str = ""
    checkout_id: str = ""
    student_id: str = ""
    refunded_minor: int = 0
    test_mode: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def uid(self, prefix: str) -> str:
        return self.event_id or f"{prefix}{uuid.uuid4().hex[:20]}"


def dumps(payload: dict) -> bytes:
    # Decimal amounts are written as JSON numbers, exactly.
    return json.dumps(payload, default=_json_default).encode()


def _json_default(value):
    if isinstance(value, Decimal):
        # A short decimal's float prints back as the same digits; whole amounts as integers.
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(type(value).__name__)


def hmac_hex(key: bytes, message: bytes, digest=hashlib.sha256) -> str:
    return hmac.new(key, message, digest).hexdigest()


# --- Stripe: Stripe-Signature t=..,v1=.. over "<t>.<body>" ----------------------------------------


def stripe_signature_header(body: bytes, secrets: list[str], timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + body
    return ",".join([f"t={timestamp}"] + [f"v1={hmac_hex(s.encode(), signed)}" for s in secrets])


def stripe_stripe_amount(p: Params) -> int:
    from providers.stripe import to_stripe_amount  # the unit table is a fact, shared on purpose

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
        from providers.stripe import to_stripe_amount

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


# --- Paystack: x-paystack-signature = HMAC-SHA512(secret key, body) ------------------------------


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


# --- M-Pesa: unsigned callback; our token in the URL ---------------------------------------------


def mpesa_callback(p: Params, result_code: int = 0) -> dict:
    callback = {
        "MerchantRequestID": p.extra.get("merchant_request_id", "29115-34620561-1"),
        "CheckoutRequestID": p.checkout_id,
        "ResultCode": result_code,
        "ResultDesc": "The service request is processed successfully." if result_code == 0 else "Request cancelled by user",
    }
    if result_code == 0:
        callback["CallbackMetadata"] = {
            "Item": [
                {"Name": "Amount", "Value": Decimal(p.amount_minor) / 100},
                {"Name": "MpesaReceiptNumber", "Value": p.txn_id or uuid.uuid4().hex[:10].upper()},
                {"Name": "Balance"},
                {"Name": "TransactionDate", "Value": 20250115102115},
                {"Name": "PhoneNumber", "Value": int(p.extra.get("phone", 254708374149))},
            ]
        }
    return {"Body": {"stkCallback": callback}}


def mpesa_delivery(payload: dict | bytes, token: str) -> Delivery:
    body = payload if isinstance(payload, bytes) else dumps(payload)
    return Delivery(body, {}, {"t": token})


# --- Chapa: x-chapa-signature = HMAC-SHA256(secret, body); chapa-signature = HMAC(secret, secret) --


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


# --- Flutterwave: verif-hash = the secret hash itself ---------------------------------------------


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


# --- Omise: Omise-Signature = HMAC-SHA256(base64-decoded secret, "<ts>.<body>") ------------------


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


# --- For simulate_webhook: event types per provider ------------------------------------------------

EVENT_TYPES: dict[str, dict[str, Callable[[Params], dict]]] = {
    "stripe": {
        kind: (lambda p, kind=kind: stripe_event(kind, p))
        for kind in ("checkout.session.completed", "checkout.session.async_payment_failed", "checkout.session.expired",
                     "payment_intent.succeeded", "charge.refunded", "customer.created")
    },
    "paystack": {
        kind: (lambda p, kind=kind: paystack_event(kind, p))
        for kind in ("charge.success", "charge.failed", "refund.processed", "transfer.success")
    },
    "mpesa": {"success": lambda p: mpesa_callback(p, 0), "cancelled": lambda p: mpesa_callback(p, 1032)},
    "chapa": {
        kind: (lambda p, kind=kind: chapa_event(kind, p))
        for kind in ("charge.success", "charge.failed/cancelled", "charge.refunded")
    },
    "flutterwave": {
        kind: (lambda p, kind=kind: flutterwave_event(kind, p)) for kind in ("charge.completed", "charge.failed", "refund")
    },
    "omise": {kind: (lambda p, kind=kind: omise_event(kind, p)) for kind in ("charge.complete", "charge.failed", "refund.create")},
}
