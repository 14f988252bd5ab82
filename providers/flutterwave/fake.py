"""A fake Flutterwave v3 API: Standard payments, transaction verify (by id and by tx_ref), the
refunds list and transaction refunds (https://developer.flutterwave.com/docs/collecting-payments/standard ,
.../transaction-verification , .../refunds).

As strict as the real API where our code could get it wrong: Standard payments refuse a missing
or malformed ``customer.email``, a missing ``tx_ref`` or ``currency``, and an amount that is not a
number of major units greater than zero with at most the currency's decimals (a float's binary
tail, or cents sent where whole shillings are due, is refused); verify of an unknown transaction answers "No
transaction was found for this id"; a refund of an unknown or unpaid transaction, or of more than
is left of it, is refused. v3 documents no idempotency key for refunds: the same refund asked for
twice is two refunds here too.

Test controls: ``settle(tx_ref, "successful" | "failed", transaction_id=...)`` assigns the
transaction id Flutterwave gives a completed charge; ``refund_status`` is the status a new refund
starts in ("completed" or "pending"), ``complete_refund(refund_id)``; ``transactions`` by tx_ref;
``refunds``.
"""

from __future__ import annotations

import itertools
import re
from decimal import Decimal, InvalidOperation

from fakes.server import FakeApp, Request, Response, checkout_page, form_fields, redirect
from providers.wire import dumps

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Decimal places of the currencies these tests use; Flutterwave takes amounts in major units.
DECIMALS = {"NGN": 2, "KES": 2, "GHS": 2, "ZAR": 2, "USD": 2, "UGX": 0, "RWF": 0, "XAF": 0, "XOF": 0, "TZS": 2}


def major_amount(value) -> Decimal | None:
    """A positive amount in major units (a JSON number or a numeric string), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount > 0 else None


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
        self.refund_status = "completed"

    def settle(self, tx_ref: str, status: str = "successful", transaction_id: int | None = None) -> dict:
        with self.lock:
            txn = self.transactions[tx_ref]
            txn.update(status=status, id=transaction_id or txn["id"] or next(self._ids))
            return txn

    def complete_refund(self, refund_id: int, status: str = "completed") -> dict:
        with self.lock:
            refund = next(r for r in self.refunds if r["id"] == refund_id)
            refund["status"] = status
            return dict(refund)

    def _by_id(self, transaction_id: str) -> dict | None:
        return next((t for t in self.transactions.values() if str(t["id"]) == transaction_id), None)

    def _hosted(self, request: Request, tx_ref: str) -> Response:
        """The demo's hosted checkout: "Pay" settles the transaction, delivers v3's
        ``charge.completed`` with the secret hash in ``verif-hash`` and returns to the
        ``redirect_url`` with ``status``, ``tx_ref`` and ``transaction_id``, as Flutterwave does."""
        txn = self.transactions.get(tx_ref)
        if txn is None:
            return json_response(404, {"status": "error", "message": "No transaction was found", "data": None})
        if request.method != "POST":
            return checkout_page("Flutterwave", f"{txn['currency']} {txn['amount']}", "Test card 5531 8866 5214 2950.", can_decline=True)
        action = form_fields(request).get("action")
        if action == "back":
            return redirect(f"{txn['redirect_url']}?status=cancelled&tx_ref={tx_ref}")
        if txn["status"] == "pending":
            # A declined card is a charge.completed with status "failed".
            txn = self.settle(tx_ref, "successful" if action == "pay" else "failed")
            data = {key: txn[key] for key in ("id", "tx_ref", "flw_ref", "amount", "currency", "status", "customer")}
            data.update(charged_amount=txn["amount"], processor_response="Approved by Financial Institution", payment_type="card")
            self.deliver(dumps({"event": "charge.completed", "data": data, "event.type": "CARD_TRANSACTION"}),
                         lambda body, secret: {"verif-hash": secret})
        return redirect(f"{txn['redirect_url']}?status={txn['status']}&tx_ref={tx_ref}&transaction_id={txn['id']}")

    def handle(self, request: Request) -> Response:
        if (match := re.fullmatch(r"/checkout/([\w.=-]+)", request.path)) and self.public_url:
            return self._hosted(request, match.group(1))
        if request.headers.get("Authorization") != f"Bearer {self.secret_key}":
            return json_response(401, {"status": "error", "message": "Invalid authorization key", "data": None})
        path, method = request.path, request.method
        if method == "POST" and path == "/v3/payments":
            body = request.json()
            email = (body.get("customer") or {}).get("email") if isinstance(body.get("customer"), dict) else None
            if not email:
                return json_response(400, {"status": "error", "message": "customer.email is required", "data": None})
            if not isinstance(email, str) or not EMAIL.match(email):
                return json_response(400, {"status": "error", "message": "customer.email must be a valid email", "data": None})
            if not body.get("tx_ref") or not body.get("currency"):
                missing = "tx_ref" if not body.get("tx_ref") else "currency"
                return json_response(400, {"status": "error", "message": f"{missing} is required", "data": None})
            amount = major_amount(body.get("amount"))
            places = DECIMALS.get(body["currency"], 2)
            if amount is None or -amount.as_tuple().exponent > places:
                return json_response(
                    400, {"status": "error", "message": f"amount must be a number of {body['currency']} with at most {places} decimals", "data": None}
                )
            with self.lock:
                self.transactions[body["tx_ref"]] = {
                    "id": None, "tx_ref": body["tx_ref"], "flw_ref": f"FLW-MOCK-{next(self._ids)}",
                    # Flutterwave answers amounts as JSON numbers in major units.
                    "amount": amount, "currency": body["currency"], "status": "pending",
                    "processor_response": "Pending", "customer": body["customer"], "meta": body.get("meta"),
                    "redirect_url": body.get("redirect_url") or "",
                }
            return json_response(200, {"status": "success", "message": "Hosted Link",
                                       "data": {"link": f"{self.public_url}/checkout/{body['tx_ref']}" if self.public_url
                                                else f"https://checkout.flutterwave.test/v3/hosted/pay/{body['tx_ref']}"}})
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
            body = request.json()
            with self.lock:
                txn = self._by_id(match.group(1))
                if txn is None:
                    return json_response(404, {"status": "error", "message": "No transaction was found for this id", "data": None})
                if txn["status"] != "successful":
                    return json_response(400, {"status": "error", "message": "Transaction not refundable", "data": None})
                left = txn["amount"] - sum(r["amount_refunded"] for r in self.refunds if r["tx_id"] == txn["id"] and r["status"] != "failed")
                amount = left if body.get("amount") in (None, "") else major_amount(body.get("amount"))
                if amount is None or -amount.as_tuple().exponent > DECIMALS.get(txn["currency"], 2):
                    return json_response(400, {"status": "error", "message": "Invalid refund amount", "data": None})
                if amount > left:
                    return json_response(
                        400, {"status": "error", "message": "Refund amount cannot be greater than the transaction's unrefunded amount", "data": None}
                    )
                refund = {"id": next(self._ids), "account_id": 73362, "tx_id": txn["id"], "flw_ref": f"URF_{next(self._ids)}",
                          "wallet_id": 74639, "amount_refunded": amount, "status": self.refund_status,
                          "comments": body.get("comments", ""),
                          "destination": "payment_source", "created_at": "2025-01-24T09:18:37.000Z"}  # fmt: skip
                self.refunds.append(refund)
            return json_response(200, {"status": "success", "message": "Transaction refund initiated", "data": dict(refund)})
        return json_response(404, {"status": "error", "message": "Not found", "data": None})

    @staticmethod
    def _verify_answer(txn: dict | None) -> Response:
        if txn is None or txn["id"] is None:
            return json_response(400, {"status": "error", "message": "No transaction was found for this id", "data": None})
        data = {**txn, "charged_amount": txn["amount"], "app_fee": Decimal("350")}
        return json_response(200, {"status": "success", "message": "Transaction fetched successfully", "data": data})


# What the development server (fakes/app.py, `make run`) mounts at /flutterwave, with its demo keys.
FAKE = FakeFlutterwave
