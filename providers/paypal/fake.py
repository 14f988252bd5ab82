"""A fake PayPal REST API: OAuth2 client credentials, Orders v2 (create, show, capture), captures
and refunds (Payments v2), and verify-webhook-signature (Webhooks v1)
(https://developer.paypal.com/docs/api/orders/v2/ , .../payments/v2/ , .../webhooks/v1/).

As strict as PayPal where our code could get it wrong: every call needs a token issued by
``/v1/oauth2/token`` for the right client id and secret (HTTP Basic, ``grant_type=
client_credentials``); an order needs ``intent`` and purchase units whose ``amount.value`` is a
string with no more decimals than the currency has and above zero (``DECIMAL_PRECISION``,
``CANNOT_BE_ZERO_OR_NEGATIVE``); a capture of an order the payer has not approved is refused
(``ORDER_NOT_APPROVED``), of one already captured too (``ORDER_ALREADY_CAPTURED``); a refund in
another currency, or of more than is left, is refused (``REFUND_CURRENCY_MISMATCH``,
``REFUND_AMOUNT_EXCEEDED``); the same ``PayPal-Request-Id`` returns the first answer again.
verify-webhook-signature checks the SHA256withRSA signature over
``<transmission id>|<time>|<webhook id>|<CRC32 of the event>`` with the certificate it knows for
``cert_url``, and answers FAILURE for anything else (an unknown certificate or webhook id).

Test controls: ``approve(order_id)``, ``decline_next_capture``, ``refund_status`` (the state a
new refund starts in), ``orders``, ``captures``, ``refunds``, ``webhook_ids`` (None: any).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import secrets
from decimal import Decimal, InvalidOperation

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from core.money import CURRENCY_EXPONENTS
from fakes.server import FakeApp, Request, Response, json_response
from providers.paypal import wire

AMOUNT = re.compile(r"^((-?[0-9]+)|(-?([0-9]+)?[.][0-9]+))$")
VERIFY_FIELDS = ("auth_algo", "cert_url", "transmission_id", "transmission_sig", "transmission_time", "webhook_id")


def error(status: int, name: str, issue: str = "", description: str = "", field: str = "") -> Response:
    messages = {400: "Request is not well-formed, syntactically incorrect, or violates schema.",
                401: "Authentication failed due to invalid authentication credentials or a missing Authorization header.",
                404: "The specified resource does not exist.",
                422: "The requested action could not be performed, semantically incorrect, or failed business validation."}  # fmt: skip
    body = {"name": name, "message": messages.get(status, name), "debug_id": secrets.token_hex(6)}
    if issue:
        body["details"] = [{"field": field, "issue": issue, "description": description or issue}]
    return json_response(status, body)


class FakePayPal(FakeApp):
    def __init__(self, client_id: str = "AfakeClientId", client_secret: str = "EfakeClientSecret") -> None:
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.tokens: set[str] = set()
        self.orders: dict[str, dict] = {}
        self.captures: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.idempotent: dict[tuple[str, str], Response] = {}
        self.certs = {wire.CERT_URL: wire.signing_key().public_key()}
        self.webhook_ids: set[str] | None = None
        self.decline_next_capture = False
        self.refund_status = "COMPLETED"
        self._ids = itertools.count(1000)

    def _id(self, prefix: str = "") -> str:
        return f"{prefix}{next(self._ids):04d}{secrets.token_hex(6).upper()}"[:17]

    def approve(self, order_id: str) -> dict:
        with self.lock:
            order = self.orders[order_id]
            order["status"] = "APPROVED"
            return order

    # --- Routing ----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        path, method = request.path, request.method
        if method == "POST" and path == "/v1/oauth2/token":
            return self._token(request)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self.tokens:
            return json_response(401, {"error": "invalid_token", "error_description": "Token signature verification failed"})
        request_id = request.headers.get("Paypal-Request-Id", "")
        if method == "POST" and request_id and (path, request_id) in self.idempotent:
            return self.idempotent[(path, request_id)]
        answer = self._route(request, path, method)
        if method == "POST" and request_id and answer[0] < 300:
            self.idempotent[(path, request_id)] = answer
        return answer

    def _route(self, request: Request, path: str, method: str) -> Response:
        try:
            body = request.json() if request.body else {}
        except ValueError:
            return error(400, "INVALID_REQUEST", "MALFORMED_REQUEST_JSON", "The request JSON is not well formed.")
        if not isinstance(body, dict):
            return error(400, "INVALID_REQUEST", "MALFORMED_REQUEST_JSON", "The request JSON is not well formed.")
        if method == "POST" and path == "/v1/notifications/verify-webhook-signature":
            return self._verify(request.body, body)
        if method == "POST" and path == "/v2/checkout/orders":
            return self._create_order(body)
        if match := re.fullmatch(r"/v2/checkout/orders/([A-Z0-9]+)(/capture)?", path):
            order = self.orders.get(match.group(1))
            if order is None:
                return error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "Specified resource ID does not exist.")
            if method == "GET" and not match.group(2):
                return json_response(200, order)
            if method == "POST" and match.group(2):
                return self._capture(order)
        if method == "GET" and (match := re.fullmatch(r"/v2/payments/captures/([A-Z0-9]+)", path)):
            capture = self.captures.get(match.group(1))
            return json_response(200, capture) if capture else error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
        if method == "POST" and (match := re.fullmatch(r"/v2/payments/captures/([A-Z0-9]+)/refund", path)):
            return self._refund(match.group(1), body)
        if method == "GET" and (match := re.fullmatch(r"/v2/payments/refunds/([A-Z0-9]+)", path)):
            refund = self.refunds.get(match.group(1))
            return json_response(200, refund) if refund else error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
        return error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "Not found")

    def _token(self, request: Request) -> Response:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        form = request.body.decode("utf-8", "replace")
        if request.headers.get("Authorization") != f"Basic {expected}":
            return json_response(401, {"error": "invalid_client", "error_description": "Client Authentication failed"})
        if "grant_type=client_credentials" not in form.split("&"):
            return json_response(400, {"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"})
        token = f"A21AA{secrets.token_urlsafe(24)}"
        with self.lock:
            self.tokens.add(token)
        return json_response(200, {"scope": "https://uri.paypal.com/services/payments/payment", "access_token": token,
                                   "token_type": "Bearer", "app_id": "APP-80W284485P519543T", "expires_in": 32400,
                                   "nonce": secrets.token_hex(8)})  # fmt: skip

    def _amount(self, amount, field: str) -> Decimal | Response:
        if not isinstance(amount, dict) or not amount.get("currency_code") or "value" not in amount:
            return error(400, "INVALID_REQUEST", "MISSING_REQUIRED_PARAMETER", "A required field is missing.", field)
        value, currency = amount["value"], amount["currency_code"]
        if currency not in CURRENCY_EXPONENTS:
            return error(422, "UNPROCESSABLE_ENTITY", "CURRENCY_NOT_SUPPORTED", "Currency code is not supported.", f"{field}/currency_code")
        if not isinstance(value, str) or not AMOUNT.match(value):
            return error(400, "INVALID_REQUEST", "INVALID_PARAMETER_SYNTAX", "The value of a field does not conform to the expected format.", f"{field}/value")
        try:
            number = Decimal(value)
        except InvalidOperation:
            return error(400, "INVALID_REQUEST", "INVALID_PARAMETER_SYNTAX", "", f"{field}/value")
        if -number.as_tuple().exponent > min(CURRENCY_EXPONENTS[currency], 2):
            return error(422, "UNPROCESSABLE_ENTITY", "DECIMAL_PRECISION",
                         "If the currency supports decimals, only two decimal place precision is supported.", f"{field}/value")  # fmt: skip
        if number <= 0:
            return error(422, "UNPROCESSABLE_ENTITY", "CANNOT_BE_ZERO_OR_NEGATIVE", "Must be greater than zero.", f"{field}/value")
        return number

    def _create_order(self, body: dict) -> Response:
        if body.get("intent") not in ("CAPTURE", "AUTHORIZE"):
            return error(400, "INVALID_REQUEST", "MISSING_REQUIRED_PARAMETER", "intent is required.", "/intent")
        units = body.get("purchase_units")
        if not isinstance(units, list) or not units:
            return error(400, "INVALID_REQUEST", "MISSING_REQUIRED_PARAMETER", "purchase_units is required.", "/purchase_units")
        for index, unit in enumerate(units):
            checked = self._amount(unit.get("amount") if isinstance(unit, dict) else None, f"/purchase_units/@reference_id=='{index}'/amount")
            if not isinstance(checked, Decimal):
                return checked
        context = ((body.get("payment_source") or {}).get("paypal") or {}).get("experience_context") or {}
        order_id = self._id()
        order = {
            "id": order_id, "intent": body["intent"], "status": "PAYER_ACTION_REQUIRED",
            "purchase_units": [dict(unit) for unit in units], "create_time": "2025-02-02T00:22:13Z",
            "return_url": context.get("return_url", ""),
            "links": [{"href": f"https://api.sandbox.paypal.com/v2/checkout/orders/{order_id}", "rel": "self", "method": "GET"},
                      {"href": f"https://www.sandbox.paypal.com/checkoutnow?token={order_id}", "rel": "payer-action", "method": "GET"}],
        }  # fmt: skip
        with self.lock:
            self.orders[order_id] = order
        return json_response(200, {k: v for k, v in order.items() if k in ("id", "status", "links")})

    def _capture(self, order: dict) -> Response:
        with self.lock:
            if order["status"] == "COMPLETED":
                return error(422, "UNPROCESSABLE_ENTITY", "ORDER_ALREADY_CAPTURED", "Order already captured.")
            if order["status"] != "APPROVED":
                return error(422, "UNPROCESSABLE_ENTITY", "ORDER_NOT_APPROVED", "Payer has not yet approved the Order for payment.")
            unit = order["purchase_units"][0]
            declined, self.decline_next_capture = self.decline_next_capture, False
            capture_id = self._id()
            capture = {
                "id": capture_id, "status": "DECLINED" if declined else "COMPLETED", "amount": dict(unit["amount"]),
                "final_capture": True, "custom_id": unit.get("custom_id", ""),
                "supplementary_data": {"related_ids": {"order_id": order["id"]}},
                "links": [{"href": f"https://api.sandbox.paypal.com/v2/payments/captures/{capture_id}", "rel": "self", "method": "GET"},
                          {"href": f"https://api.sandbox.paypal.com/v2/checkout/orders/{order['id']}", "rel": "up", "method": "GET"}],
            }  # fmt: skip
            self.captures[capture_id] = capture
            order["status"] = "COMPLETED"
            unit["payments"] = {"captures": [capture]}
            return json_response(201, order)

    def _refund(self, capture_id: str, body: dict) -> Response:
        with self.lock:
            capture = self.captures.get(capture_id)
            if capture is None:
                return error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "Specified resource ID does not exist.")
            if capture["status"] not in ("COMPLETED", "PARTIALLY_REFUNDED"):
                return error(422, "UNPROCESSABLE_ENTITY", "CAPTURE_FULLY_REFUNDED" if capture["status"] == "REFUNDED" else "INVALID_RESOURCE_ID",
                             "The capture cannot be refunded.")  # fmt: skip
            taken = [r for r in self.refunds.values() if r["capture_id"] == capture_id and r["status"] != "FAILED"]
            left = Decimal(capture["amount"]["value"]) - sum(Decimal(r["amount"]["value"]) for r in taken)
            if "amount" in body:
                checked = self._amount(body["amount"], "/amount")
                if not isinstance(checked, Decimal):
                    return checked
                if body["amount"]["currency_code"] != capture["amount"]["currency_code"]:
                    return error(422, "UNPROCESSABLE_ENTITY", "REFUND_CURRENCY_MISMATCH",
                                 "Refund must be in the same currency as the capture.", "/amount/currency_code")  # fmt: skip
                amount = checked
            else:
                amount = left
            if amount > left:
                return error(422, "UNPROCESSABLE_ENTITY", "REFUND_AMOUNT_EXCEEDED",
                             "The refund amount must be less than or equal to the capture amount that has not yet been refunded.")  # fmt: skip
            refund_id = self._id()
            refund = {
                "id": refund_id, "status": self.refund_status, "capture_id": capture_id,
                "amount": {"currency_code": capture["amount"]["currency_code"], "value": body.get("amount", {}).get("value") or str(amount)},
                "note_to_payer": body.get("note_to_payer", ""),
                "links": [{"href": f"https://api.sandbox.paypal.com/v2/payments/refunds/{refund_id}", "rel": "self", "method": "GET"},
                          {"href": f"https://api.sandbox.paypal.com/v2/payments/captures/{capture_id}", "rel": "up", "method": "GET"}],
            }  # fmt: skip
            self.refunds[refund_id] = refund
            capture["status"] = "REFUNDED" if amount == left else "PARTIALLY_REFUNDED"
            order = self.orders.get(capture["supplementary_data"]["related_ids"]["order_id"])
            if order is not None:
                order["purchase_units"][0]["payments"].setdefault("refunds", []).append(refund)
            return json_response(201, refund)

    def _verify(self, raw: bytes, body: dict) -> Response:
        missing = [name for name in VERIFY_FIELDS if not isinstance(body.get(name), str) or not body.get(name)]
        if missing or not isinstance(body.get("webhook_event"), dict):
            field = missing[0] if missing else "webhook_event"
            return error(400, "VALIDATION_ERROR", "MISSING_REQUIRED_PARAMETER", f"{field} is required", f"/{field}")
        key = self.certs.get(body["cert_url"])
        if key is None or (self.webhook_ids is not None and body["webhook_id"] not in self.webhook_ids):
            return json_response(200, {"verification_status": "FAILURE"})
        event_bytes = _raw_member(raw, "webhook_event")
        message = wire.signed_message(body["transmission_id"], body["transmission_time"], body["webhook_id"], event_bytes)
        try:
            key.verify(base64.b64decode(body["transmission_sig"], validate=True), message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, binascii.Error, ValueError):
            return json_response(200, {"verification_status": "FAILURE"})
        return json_response(200, {"verification_status": "SUCCESS"})


def _raw_member(raw: bytes, name: str) -> bytes:
    """The bytes of the top-level member ``name`` as sent, whitespace included when it is the last
    member: PayPal signed the CRC32 of the event's exact bytes, and a re-encoding would differ."""
    text = raw.decode("utf-8")
    start = text.rfind(f'"{name}"')
    colon = text.index(":", start) + 1
    while text[colon] in " \t\r\n":
        colon += 1
    _, end = json.JSONDecoder().raw_decode(text, colon)
    closing = text.rstrip().rfind("}")
    if text[end:closing].strip() == "":
        end = closing
    return text[colon:end].encode("utf-8")


# What the development server (fakes/app.py, `make run`) mounts at /paypal, with its demo keys.
FAKE = FakePayPal
