"""A fake Flutterwave v3 API: Standard payments, transaction verify (by id and by tx_ref), the
refunds list and transaction refunds (https://developer.flutterwave.com/docs/collecting-payments/standard ,
.../transaction-verification , .../refunds).

Test controls: ``settle(tx_ref, "successful" | "failed", transaction_id=...)`` assigns the
transaction id Flutterwave gives a completed charge; ``transactions`` by tx_ref; ``refunds``.
"""

from __future__ import annotations

import itertools
import re
from decimal import Decimal

from fakes.server import FakeApp, Request, Response
from fakes.webhooks import dumps


def json_response(status: int, body) -> Response:
    # Amounts are Decimal here and must go out as exact JSON numbers.
    return status, {"Content-Type": "application/json"}, dumps(body)


class FakeFlutterwave(FakeApp):
    def __init__(self, secret_key: str = "FLWSECK_TEST-fake") -> None:
        super().__init__()
        self.secret_key = secret_key
        self.transactions: dict[str, dict] = {}
        self.refunds: list[dict] = []
        self._ids = itertools.count(285959875)

    def settle(self, tx_ref: str, status: str = "successful", transaction_id: int | None = None) -> dict:
        with self.lock:
            txn = self.transactions[tx_ref]
            txn.update(status=status, id=transaction_id or txn["id"] or next(self._ids))
            return txn

    def _by_id(self, transaction_id: str) -> dict | None:
        return next((t for t in self.transactions.values() if str(t["id"]) == transaction_id), None)

    def handle(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {self.secret_key}":
            return json_response(401, {"status": "error", "message": "Invalid authorization key", "data": None})
        path, method = request.path, request.method
        if method == "POST" and path == "/v3/payments":
            body = request.json()
            if not (body.get("customer") or {}).get("email") or not body.get("tx_ref") or not body.get("currency"):
                return json_response(400, {"status": "error", "message": "customer.email is required", "data": None})
            with self.lock:
                self.transactions[body["tx_ref"]] = {
                    "id": None, "tx_ref": body["tx_ref"], "flw_ref": f"FLW-MOCK-{next(self._ids)}",
                    # Flutterwave answers amounts as JSON numbers in major units.
                    "amount": Decimal(str(body["amount"])), "currency": body["currency"], "status": "pending",
                    "processor_response": "Pending", "customer": body["customer"], "meta": body.get("meta"),
                }
            return json_response(200, {"status": "success", "message": "Hosted Link",
                                       "data": {"link": f"https://checkout.flutterwave.test/v3/hosted/pay/{body['tx_ref']}"}})
        if method == "GET" and (match := re.fullmatch(r"/v3/transactions/(\d+)/verify", path)):
            txn = self._by_id(match.group(1))
            return self._verify_answer(txn)
        if method == "GET" and path == "/v3/transactions/verify_by_reference":
            txn = self.transactions.get((request.query.get("tx_ref") or [""])[0])
            return self._verify_answer(txn)
        if method == "GET" and path == "/v3/refunds":
            wanted = (request.query.get("id") or [""])[0]
            found = [r for r in self.refunds if not wanted or str(r["tx_id"]) == wanted]
            return json_response(200, {"status": "success", "message": "Refunds fetched", "data": found})
        if method == "POST" and (match := re.fullmatch(r"/v3/transactions/(\d+)/refund", path)):
            with self.lock:
                txn = self._by_id(match.group(1))
                if txn is None or txn["status"] != "successful":
                    return json_response(400, {"status": "error", "message": "Transaction not refundable", "data": None})
                amount = Decimal(str(request.json().get("amount") or txn["amount"]))
                refund = {"id": next(self._ids), "account_id": 73362, "tx_id": txn["id"], "flw_ref": f"URF_{next(self._ids)}",
                          "wallet_id": 74639, "amount_refunded": amount, "status": "completed",
                          "destination": "payment_source", "created_at": "2025-01-24T09:18:37.000Z"}
                self.refunds.append(refund)
            return json_response(200, {"status": "success", "message": "Transaction refund initiated", "data": refund})
        return json_response(404, {"status": "error", "message": "Not found", "data": None})

    @staticmethod
    def _verify_answer(txn: dict | None) -> Response:
        if txn is None or txn["id"] is None:
            return json_response(400, {"status": "error", "message": "No transaction was found for this id", "data": None})
        data = {**txn, "charged_amount": txn["amount"], "app_fee": Decimal("350")}
        return json_response(200, {"status": "success", "message": "Transaction fetched successfully", "data": data})
