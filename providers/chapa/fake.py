"""A fake Chapa API: transaction/initialize and transaction/verify/<tx_ref>
(https://developer.chapa.co/docs/accept-payments , https://developer.chapa.co/docs/verify-payments).

A refund (https://developer.chapa.co/refund, form-encoded) is refused for an unknown or unpaid
transaction, an amount that is not a positive decimal of major units or is more than is left, and
a ``reference`` used before (Chapa: "must be unique within your business").

Test controls: ``settle(tx_ref, "success" | "failed" | ...)``; ``transactions`` by tx_ref;
``refunds`` by reference.
"""

from __future__ import annotations

import itertools
import json
import re
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl

from fakes.server import FakeApp, Request, Response, checkout_page, form_fields, hmac_hex, json_response, redirect


class FakeChapa(FakeApp):
    def __init__(self, secret_key: str = "CHASECK_TEST-fake") -> None:
        super().__init__()
        self.secret_key = secret_key
        self.transactions: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self._ids = itertools.count(1)

    def settle(self, tx_ref: str, status: str = "success") -> dict:
        with self.lock:
            self.transactions[tx_ref]["status"] = status
            return self.transactions[tx_ref]

    def _hosted(self, request: Request, tx_ref: str) -> Response:
        """The demo's hosted checkout: "Pay" settles the transaction, delivers ``charge.success``
        signed in ``x-chapa-signature`` (hex HMAC-SHA256 of the body) and returns to the
        ``return_url``."""
        txn = self.transactions.get(tx_ref)
        if txn is None:
            return json_response(404, {"message": "Invalid transaction or Transaction not found", "status": "failed", "data": None})
        if request.method != "POST":
            return checkout_page("Chapa", f"{txn['currency']} {txn['amount']}", "Test phone 0900123456 (telebirr).")
        if form_fields(request).get("action") == "back":
            return redirect(txn["return_url"])
        if txn["status"] != "success":
            txn = self.settle(tx_ref)
            data = {key: value for key, value in txn.items() if key != "return_url"}
            body = json.dumps({"event": "charge.success", **data, "payment_method": txn["method"]}).encode()
            self.deliver(body, lambda body, secret: {"x-chapa-signature": hmac_hex(secret.encode(), body)})
        return redirect(txn["return_url"])

    def handle(self, request: Request) -> Response:
        if (match := re.fullmatch(r"/checkout/([\w.-]+)", request.path)) and self.public_url:
            return self._hosted(request, match.group(1))
        if request.headers.get("Authorization") != f"Bearer {self.secret_key}":
            return json_response(401, {"message": "Invalid API Key or User doesn't exist", "status": "failed", "data": None})
        if request.method == "POST" and request.path == "/v1/transaction/initialize":
            body = request.json()
            if not body.get("tx_ref") or not isinstance(body.get("amount"), str) or body.get("currency") not in ("ETB", "USD"):
                return json_response(400, {"message": {"amount": ["The amount field is required."]}, "status": "failed", "data": None})
            with self.lock:
                if body["tx_ref"] in self.transactions:
                    return json_response(400, {"message": "Transaction reference has been used before", "status": "failed", "data": None})
                self.transactions[body["tx_ref"]] = {
                    "first_name": body.get("first_name"), "last_name": body.get("last_name"), "email": body.get("email"),
                    "currency": body["currency"], "amount": body["amount"], "charge": "0.00",
                    "mode": "test" if "_TEST-" in self.secret_key else "live",
                    "method": "telebirr", "type": "API", "status": "pending",
                    "reference": f"AP{next(self._ids):010d}", "tx_ref": body["tx_ref"],
                    "customization": body.get("customization"), "meta": body.get("meta"),
                    "return_url": body.get("return_url") or "",
                }
            return json_response(200, {"message": "Hosted Link", "status": "success",
                                       "data": {"checkout_url": f"{self.public_url}/checkout/{body['tx_ref']}" if self.public_url
                                                else f"https://checkout.chapa.test/checkout/payment/{body['tx_ref']}"}})
        if request.method == "GET" and (match := re.fullmatch(r"/v1/transaction/verify/([\w.-]+)", request.path)):
            txn = self.transactions.get(match.group(1))
            if txn is None:
                return json_response(404, {"message": "Invalid transaction or Transaction not found", "status": "failed", "data": None})
            return json_response(200, {"message": "Payment details", "status": "success", "data": txn})
        if request.method == "POST" and (match := re.fullmatch(r"/v1/refund/([\w.-]+)", request.path)):
            return self._refund(match.group(1), dict(parse_qsl(request.body.decode())))
        return json_response(404, {"message": "Not found", "status": "failed", "data": None})

    def _refund(self, wanted: str, form: dict) -> Response:
        def refused(status: int, message: str) -> Response:
            return json_response(status, {"message": message, "status": "failed", "data": None})

        with self.lock:
            txn = self.transactions.get(wanted) or next((t for t in self.transactions.values() if t["reference"] == wanted), None)
            if txn is None:
                return refused(404, "Invalid transaction or Transaction not found")
            if txn["status"] != "success":
                return refused(400, "Only successful transactions can be refunded")
            reference = form.get("reference") or f"RF{next(self._ids):010d}"
            if reference in self.refunds:
                return refused(400, "Refund reference has been used before")
            left = Decimal(txn["amount"]) - sum(Decimal(r["amount"]) for r in self.refunds.values() if r["tx_ref"] == txn["tx_ref"])
            try:
                amount = Decimal(form["amount"]) if form.get("amount") else left
            except InvalidOperation:
                return refused(400, "The amount must be a number")
            if not amount.is_finite() or amount <= 0 or -amount.as_tuple().exponent > 2:
                return refused(400, "The amount must be a number greater than zero with at most 2 decimals")
            if amount > left:
                return refused(400, "The refund amount is greater than the refundable amount")
            refund = {"tx_ref": txn["tx_ref"], "reference": reference, "amount": f"{amount:.2f}", "currency": txn["currency"],
                      "reason": form.get("reason", ""), "status": "pending"}  # fmt: skip
            self.refunds[reference] = refund
        return json_response(200, {"message": "Refund initiated successfully", "status": "success", "data": dict(refund)})


# What the development server (fakes/app.py, `make run`) mounts at /chapa, with its demo keys.
FAKE = FakeChapa
