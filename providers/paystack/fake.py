"""A fake Paystack API: transaction/initialize, transaction/verify/<reference> and refund, with
Paystack's ``{"status": bool, "message", "data"}`` envelope (https://github.com/PaystackOSS/openapi).

As strict as the real API where our code could get it wrong: initialize refuses a missing or
malformed email ("Invalid Email Address Passed") and an amount that is not a whole number of
subunits greater than zero ("Invalid Amount Sent", with Paystack's ``nextStep``); verify of an
unknown reference answers "Transaction reference not found"; a refund of an unknown or unpaid
transaction, or of more than is left of it, is refused. Paystack documents no idempotency key for
refunds: the same refund asked for twice is two refunds here too.

Test controls: ``settle(reference, "success" | "failed" | ...)``; ``process_refund(refund_id,
"processed" | "failed")``, which returns the ``refund.*`` webhook Paystack sends for it (its
documented shape: no refund id); ``transactions`` by reference, ``refunds`` by id; ``stall_*``
delay the next answers (the refund is still made).

Hosted checkout (the demo): with ``public_url`` set, ``authorization_url`` is this fake's page
``/checkout/<access code>``; "Pay" settles the transaction, delivers ``charge.success`` signed
as Paystack signs it (``x-paystack-signature``: HMAC-SHA512 of the body with the secret key) and
returns the browser to the ``callback_url``; "Cancel" goes to the ``metadata.cancel_action``.
"""

from __future__ import annotations

import itertools
import json
import re
import time

from fakes.server import FakeApp, Request, Response, checkout_page, form_fields, hmac_hex, json_response, redirect

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _error(status: int, message: str, code: str = "", next_step: str = "") -> Response:
    body: dict = {"status": False, "message": message}
    if code:
        body.update(type="validation_error", code=code)
    if next_step:
        body["meta"] = {"nextStep": next_step}
    return json_response(status, body)


def _subunits(value) -> int | None:
    """A whole, positive number of subunits as Paystack takes it (an integer, or its digits as a
    string); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return int(value)
    return None


class FakePaystack(FakeApp):
    def __init__(self, secret_key: str = "sk_test_fake") -> None:
        super().__init__()
        self.secret_key = secret_key
        self.transactions: dict[str, dict] = {}
        self.refunds: dict[int, dict] = {}
        self._ids = itertools.count(302961)
        self.stall_seconds = 0.0
        self.stall_next = 0

    def settle(self, reference: str, status: str = "success") -> dict:
        with self.lock:
            txn = self.transactions[reference]
            txn.update(status=status, gateway_response="Successful" if status == "success" else "Declined")
            return txn

    def process_refund(self, refund_id: int, status: str = "processed") -> dict:
        """Finish a refund and return the webhook Paystack sends for it: ``refund.processed`` or
        ``refund.failed`` (https://paystack.com/docs/payments/webhooks ; no refund id in it)."""
        with self.lock:
            refund = self.refunds[refund_id]
            refund["status"] = status
            txn = self.transactions[refund["transaction_reference"]]
            if status == "failed":
                txn["refunded"] -= refund["amount"]
            return {
                "event": f"refund.{status}",
                "data": {
                    "status": status,
                    "transaction_reference": refund["transaction_reference"],
                    "refund_reference": f"{'TRF_' if status == 'failed' else ''}{132013318360 + refund_id}",
                    # Paystack sends a processed refund's amount as a string, a failed one's as a number.
                    "amount": str(refund["amount"]) if status == "processed" else refund["amount"],
                    "currency": refund["currency"],
                    "processor": "mpgs_zen",
                    "customer": {"first_name": "Ada", "last_name": "Obi", "email": "parent@example.com"},
                    "integration": 412829,
                    "domain": txn["domain"],
                },
            }

    def handle(self, request: Request) -> Response:
        with self.lock:
            stall = self.stall_next > 0 and request.method == "POST"
            self.stall_next -= 1 if stall else 0
        response = self._route(request)
        if stall:
            time.sleep(self.stall_seconds)
        return response

    def _hosted(self, request: Request, code: str) -> Response:
        txn = next((t for t in self.transactions.values() if t.get("access_code") == code), None)
        if txn is None:
            return json_response(404, {"status": False, "message": "Not found"})
        if request.method != "POST":
            return checkout_page("Paystack", f"{txn['currency']} {txn['amount']} (subunits)", "Test card 4084 0840 8408 4081.")
        if form_fields(request).get("action") == "back":
            return redirect((txn.get("metadata") or {}).get("cancel_action") or txn["callback_url"])
        if txn["status"] != "success":
            data = dict(self.settle(txn["reference"]), channel="card", paid_at=time.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
            data.pop("access_code", None), data.pop("callback_url", None), data.pop("refunded", None)
            body = json.dumps({"event": "charge.success", "data": data}).encode()
            self.deliver(body, lambda body, secret: {"x-paystack-signature": hmac_hex(secret.encode(), body, "sha512")})
        return redirect(txn["callback_url"])

    def _route(self, request: Request) -> Response:
        if (match := re.fullmatch(r"/checkout/(\w+)", request.path)) and self.public_url:
            return self._hosted(request, match.group(1))
        if request.headers.get("Authorization") != f"Bearer {self.secret_key}":
            return json_response(401, {"status": False, "message": "Invalid key"})
        if request.method == "POST" and request.path == "/transaction/initialize":
            return self._initialize(request.json())
        if request.method == "GET" and (match := re.fullmatch(r"/transaction/verify/([\w.=-]+)", request.path)):
            txn = self.transactions.get(match.group(1))
            if txn is None:
                return _error(400, "Transaction reference not found")
            return json_response(200, {"status": True, "message": "Verification successful", "data": txn})
        if request.method == "POST" and request.path == "/refund":
            return self._refund(request.json())
        if request.method == "GET" and (match := re.fullmatch(r"/refund/(\d+)", request.path)):
            refund = self.refunds.get(int(match.group(1)))
            if refund is None:
                return _error(404, "Refund not found")
            return json_response(200, {"status": True, "message": "Refund retrieved", "data": refund})
        return json_response(404, {"status": False, "message": "Not found"})

    def _initialize(self, body: dict) -> Response:
        # https://github.com/PaystackOSS/openapi TransactionInitialize: email and amount required,
        # the amount in the currency's subunit, a whole number.
        if not isinstance(body.get("email"), str) or not EMAIL.match(body["email"]):
            return _error(400, "Invalid Email Address Passed", "invalid_email", "Ensure you pass a valid email address")
        amount = _subunits(body.get("amount"))
        if amount is None:
            return _error(
                400, "Invalid Amount Sent", "invalid_amount",
                "Ensure that you're passing your amount correctly. It should be a number greater than zero, with no decimal places",
            )  # fmt: skip
        currency = body.get("currency", "NGN")
        if currency not in ("NGN", "GHS", "ZAR", "KES", "USD", "XOF", "EGP", "RWF"):
            return _error(400, "Currency not supported by merchant", "unsupported_currency")
        reference = body.get("reference") or f"ref{next(self._ids)}"
        with self.lock:
            if reference in self.transactions:
                return _error(400, "Duplicate Transaction Reference", "duplicate_reference")
            code = f"ac_{next(self._ids)}"
            self.transactions[reference] = {
                "id": next(self._ids),
                "domain": "test" if self.secret_key.startswith("sk_test_") else "live",
                "status": "abandoned",
                "reference": reference,
                "amount": amount,
                "currency": currency,
                "gateway_response": "The transaction was not completed",
                "metadata": body.get("metadata"),
                "customer": {"email": body["email"]},
                "refunded": 0,
                "access_code": code,
                "callback_url": body.get("callback_url") or "",
            }
        return json_response(
            200,
            {"status": True, "message": "Authorization URL created",
             "data": {"authorization_url": f"{self.public_url}/checkout/{code}" if self.public_url else f"https://checkout.paystack.test/{code}",
                      "access_code": code, "reference": reference}},
        )  # fmt: skip

    def _refund(self, body: dict) -> Response:
        # https://github.com/PaystackOSS/openapi RefundCreate: transaction (reference or id)
        # required; amount optional (whole subunits, the rest of the transaction when absent).
        wanted = str(body.get("transaction") or "")
        with self.lock:
            txn = self.transactions.get(wanted) or next(
                (t for t in self.transactions.values() if str(t["id"]) == wanted), None
            )
            if txn is None:
                return _error(404, "Transaction not found")
            if txn["status"] != "success":
                return _error(400, "Transaction has not been completed and cannot be refunded")
            left = txn["amount"] - txn["refunded"]
            amount = left if body.get("amount") is None else _subunits(body.get("amount"))
            if amount is None:
                return _error(400, "Invalid Amount Sent", "invalid_amount")
            if left == 0:
                return _error(400, "Transaction has been fully reversed")
            if amount > left:
                return _error(400, "Refund amount cannot be more than the unrefunded amount of the transaction")
            if body.get("currency") not in (None, txn["currency"]):
                return _error(400, "Currency does not match the transaction's")
            txn["refunded"] += amount
            refund_id = next(self._ids)
            refund = {
                "id": refund_id, "integration": 412829, "domain": txn["domain"], "transaction": txn["id"],
                "transaction_reference": txn["reference"], "amount": amount, "currency": txn["currency"],
                "status": "pending", "merchant_note": body.get("merchant_note", ""), "customer_note": body.get("customer_note", ""),
                "refunded_by": "merchant@example.org", "deducted_amount": 0, "fully_deducted": False,
            }  # fmt: skip
            self.refunds[refund_id] = refund
        return json_response(
            200,
            {"status": True, "message": "Refund has been queued for processing",
             "data": {**refund, "transaction": {"id": txn["id"], "reference": txn["reference"], "amount": txn["amount"], "currency": txn["currency"]}}},
        )  # fmt: skip


# What the development server (fakes/app.py, `make run`) mounts at /paystack, with its demo keys.
FAKE = FakePaystack
