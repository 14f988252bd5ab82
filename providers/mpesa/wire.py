"""Daraja's STK Push callback as Safaricom sends it
(https://developer.safaricom.co.ke/APIs/MpesaExpressSimulate): unsigned, so the only proof is
the per-payment token we put in the callback URL (``providers.mpesa.adapter.callback_token``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal

from providers.mpesa.adapter import CURRENCY, callback_token
from providers.wire import Delivery, Params, dumps

# M-Pesa collects KES only (the adapter refuses any other currency).
DEFAULT_CURRENCY = CURRENCY
STARTED_CHECKOUTS_ONLY = (
    "no open M-Pesa payment with a CheckoutRequestID for school {school}: "
    "M-Pesa callbacks are only accepted for STK pushes this service started"
)


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


def signed_delivery(payload: dict | bytes, *, secret: str, payment_id=None) -> Delivery:
    """The callback of the STK push of payment ``payment_id`` (its token, derived from the
    account's secret, in the URL)."""
    return mpesa_delivery(payload, callback_token(secret, payment_id))


EVENT_TYPES: dict[str, Callable[[Params], dict]] = {
    "success": lambda p: mpesa_callback(p, 0),
    "cancelled": lambda p: mpesa_callback(p, 1032),
}
