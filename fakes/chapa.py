"""A fake Chapa API: transaction/initialize and transaction/verify/<tx_ref>
(https://developer.chapa.co/docs/accept-payments , https://developer.chapa.co/docs/verify-payments).

Test controls: ``settle(tx_ref, "success" | "failed" | ...)``; ``transactions`` by tx_ref.
"""

from __future__ import annotations

import itertools
import re

from fakes.server import FakeApp, Request, Response, json_response


class FakeChapa(FakeApp):
    def __init__(self, secret_key: str = "CHASECK_TEST-fake") -> None:
        super().__init__()
        self.secret_key = secret_key
        self.transactions: dict[str, dict] = {}
        self._ids = itertools.count(1)

    def settle(self, tx_ref: str, status: str = "success") -> dict:
        with self.lock:
            self.transactions[tx_ref]["status"] = status
            return self.transactions[tx_ref]

    def handle(self, request: Request) -> Response:
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
                }
            return json_response(200, {"message": "Hosted Link", "status": "success",
                                       "data": {"checkout_url": f"https://checkout.chapa.test/checkout/payment/{body['tx_ref']}"}})
        if request.method == "GET" and (match := re.fullmatch(r"/v1/transaction/verify/([\w.-]+)", request.path)):
            txn = self.transactions.get(match.group(1))
            if txn is None:
                return json_response(404, {"message": "Invalid transaction or Transaction not found", "status": "failed", "data": None})
            return json_response(200, {"message": "Payment details", "status": "success", "data": txn})
        return json_response(404, {"message": "Not found", "status": "failed", "data": None})
