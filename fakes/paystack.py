"""A fake Paystack API: transaction/initialize, transaction/verify/<reference> and refund, with
Paystack's ``{"status": bool, "message", "data"}`` envelope (https://github.com/PaystackOSS/openapi).

Test controls: ``settle(reference, "success" | "failed" | ...)``; ``transactions`` by reference.
"""

from __future__ import annotations

import itertools
import re

from fakes.server import FakeApp, Request, Response, json_response


class FakePaystack(FakeApp):
    def __init__(self, secret_key: str = "sk_test_fake") -> None:
        super().__init__()
        self.secret_key = secret_key
        self.transactions: dict[str, dict] = {}
        self._ids = itertools.count(302961)

    def settle(self, reference: str, status: str = "success") -> dict:
        with self.lock:
            txn = self.transactions[reference]
            txn.update(status=status, gateway_response="Successful" if status == "success" else "Declined")
            return txn

    def handle(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {self.secret_key}":
            return json_response(401, {"status": False, "message": "Invalid key"})
        if request.method == "POST" and request.path == "/transaction/initialize":
            body = request.json()
            missing = [name for name in ("email", "amount") if not body.get(name)]
            if missing:
                return json_response(400, {"status": False, "message": f"{missing[0]} is required"})
            reference = body.get("reference") or f"ref{next(self._ids)}"
            with self.lock:
                if reference in self.transactions:
                    return json_response(400, {"status": False, "message": "Duplicate Transaction Reference"})
                code = f"ac_{next(self._ids)}"
                self.transactions[reference] = {
                    "id": next(self._ids),
                    "domain": "test" if self.secret_key.startswith("sk_test_") else "live",
                    "status": "abandoned",
                    "reference": reference,
                    "amount": int(body["amount"]),
                    "currency": body.get("currency", "NGN"),
                    "gateway_response": "The transaction was not completed",
                    "metadata": body.get("metadata"),
                    "refunded": 0,
                }
            return json_response(
                200,
                {"status": True, "message": "Authorization URL created",
                 "data": {"authorization_url": f"https://checkout.paystack.test/{code}", "access_code": code, "reference": reference}},
            )
        if request.method == "GET" and (match := re.fullmatch(r"/transaction/verify/([\w.=-]+)", request.path)):
            txn = self.transactions.get(match.group(1))
            if txn is None:
                return json_response(400, {"status": False, "message": "Transaction reference not found"})
            return json_response(200, {"status": True, "message": "Verification successful", "data": txn})
        if request.method == "POST" and request.path == "/refund":
            body = request.json()
            with self.lock:
                txn = self.transactions.get(str(body.get("transaction")))
                if txn is None or txn["status"] != "success":
                    return json_response(400, {"status": False, "message": "Transaction not found or not refundable"})
                amount = int(body.get("amount") or txn["amount"] - txn["refunded"])
                if txn["refunded"] + amount > txn["amount"]:
                    return json_response(400, {"status": False, "message": "Refund amount exceeds transaction amount"})
                txn["refunded"] += amount
                refund_id = next(self._ids)
            return json_response(
                200,
                {"status": True, "message": "Refund has been queued for processing",
                 "data": {"id": refund_id, "transaction": {"id": txn["id"], "reference": txn["reference"]},
                          "amount": amount, "currency": txn["currency"], "status": "pending"}},
            )
        return json_response(404, {"status": False, "message": "Not found"})
