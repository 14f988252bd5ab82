"""A fake Omise API: charges (form-encoded, HTTP Basic with the secret key), charge retrieval and
refunds (https://docs.omise.co/charges-api , https://docs.omise.co/refunds-api).

A refund (https://docs.omise.co/refunds-api) needs a whole, positive ``amount`` of the smallest
unit and is refused for an unknown charge (404), an unpaid one, or more than is left of it. The
Idempotency-Key header Omise's own pages do not document is recorded but not honoured: the same
refund asked for twice is two refunds here.

Test controls: ``settle(charge_id, "successful" | "failed")``; ``refund_status`` is the status a new
refund starts in ("closed", or "pending"), ``close_refund(refund_id)``; ``charges`` by id.

Hosted page (the demo): with ``public_url`` set, ``authorize_uri`` is this fake's page
``/offsites/<charge id>``; "Pay" settles the charge, delivers a ``charge.complete`` event signed
as the adapter checks it (``Omise-Signature``: hex HMAC-SHA256 of "<timestamp>.<body>", keyed
with the secret base64-decoded) and returns to the charge's ``return_uri``; "Decline" does the
same for a failed charge.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import time
from urllib.parse import parse_qsl

from fakes.server import FakeApp, Request, Response, checkout_page, form_fields, hmac_hex, json_response, redirect


def omise_signature_headers(body: bytes, secret: str) -> dict[str, str]:
    try:
        key = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        key = secret.encode()
    timestamp = str(int(time.time()))
    return {"Omise-Signature": hmac_hex(key, timestamp.encode() + b"." + body), "Omise-Signature-Timestamp": timestamp}


class FakeOmise(FakeApp):
    def __init__(self, secret_key: str = "skey_test_fake") -> None:
        super().__init__()
        self.secret_key = secret_key
        self.charges: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self.refund_status = "closed"

    def settle(self, charge_id: str, status: str = "successful") -> dict:
        with self.lock:
            charge = self.charges[charge_id]
            charge.update(status=status, paid=status == "successful")
            return charge

    def close_refund(self, refund_id: str, status: str = "closed") -> dict:
        with self.lock:
            for charge in self.charges.values():
                for refund in charge["refunds"]["data"]:
                    if refund["id"] == refund_id:
                        refund["status"] = status
                        return dict(refund)
        raise KeyError(refund_id)

    def _hosted(self, request: Request, charge_id: str) -> Response:
        charge = self.charges.get(charge_id)
        if charge is None:
            return _error(404, "not_found", "charge was not found")
        if request.method != "POST":
            return checkout_page(
                "Omise", f"{charge['currency'].upper()} {charge['amount']} (smallest unit)", "Test card 4242 4242 4242 4242.",
                can_decline=True,
            )
        action = form_fields(request).get("action")
        if action in ("pay", "decline") and charge["status"] == "pending":
            # A declined card: charge.complete with status "failed" (https://docs.omise.co/charges-api).
            charge = self.settle(charge_id, "successful" if action == "pay" else "failed")
            event = {"object": "event", "id": f"evnt_test_{next(self._ids):019d}", "livemode": False, "key": "charge.complete",
                     "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "data": dict(charge)}  # fmt: skip
            self.deliver(json.dumps(event).encode(), omise_signature_headers)
        return redirect(charge["return_uri"])

    def handle(self, request: Request) -> Response:
        if (match := re.fullmatch(r"/offsites/(\w+)", request.path)) and self.public_url:
            return self._hosted(request, match.group(1))
        expected = "Basic " + base64.b64encode(f"{self.secret_key}:".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return _error(401, "authentication_failure", "authentication failed")
        if request.method == "POST" and request.path == "/charges":
            form = dict(parse_qsl(request.body.decode()))
            if not form.get("amount", "").isdigit() or not form.get("currency"):
                return _error(400, "invalid_charge", "amount must be an integer")
            n = next(self._ids)
            charge_id = f"chrg_test_{n:019d}"
            charge = {
                "object": "charge", "id": charge_id, "livemode": not self.secret_key.startswith("skey_test_"),
                "amount": int(form["amount"]), "currency": form["currency"], "status": "pending", "paid": False,
                "refunded_amount": 0, "refunds": {"object": "list", "data": []}, "return_uri": form.get("return_uri"),
                "authorize_uri": f"{self.public_url}/offsites/{charge_id}" if self.public_url
                else f"https://pay.omise.test/offsites/ofsp_test_{n}/pay",
                "source": {"object": "source", "type": form.get("source[type]")},
                "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
                "description": form.get("description"),
            }
            with self.lock:
                self.charges[charge_id] = charge
            return json_response(200, charge)
        if request.method == "GET" and (match := re.fullmatch(r"/charges/(\w+)", request.path)):
            charge = self.charges.get(match.group(1))
            return json_response(200, charge) if charge else _error(404, "not_found", "charge was not found")
        if request.method == "GET" and (match := re.fullmatch(r"/charges/(\w+)/refunds/(\w+)", request.path)):
            charge = self.charges.get(match.group(1))
            refund = next((r for r in (charge or {}).get("refunds", {}).get("data", []) if r["id"] == match.group(2)), None)
            return json_response(200, refund) if refund else _error(404, "not_found", "refund was not found")
        if request.method == "POST" and (match := re.fullmatch(r"/charges/(\w+)/refunds", request.path)):
            form = dict(parse_qsl(request.body.decode()))
            with self.lock:
                charge = self.charges.get(match.group(1))
                if charge is None:
                    return _error(404, "not_found", "charge was not found")
                raw = form.get("amount", "")
                if not raw.isdigit() or int(raw) <= 0:
                    return _error(400, "invalid_amount", "amount must be greater than 0")
                amount = int(raw)
                if charge["status"] != "successful":
                    return _error(400, "invalid_charge", "charge can't be refunded")
                if charge["refunded_amount"] + amount > charge["amount"]:
                    return _error(400, "invalid_amount", "amount exceeds the refundable amount of the charge")
                charge["refunded_amount"] += amount
                refund = {"object": "refund", "id": f"rfnd_test_{next(self._ids):019d}", "amount": amount,
                          "currency": charge["currency"], "charge": charge["id"], "livemode": charge["livemode"],
                          "status": self.refund_status, "voided": False,
                          "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")}}  # fmt: skip
                charge["refunds"]["data"].append(refund)
            return json_response(200, dict(refund))
        return _error(404, "not_found", "path not found")


def _error(status: int, code: str, message: str) -> Response:
    return json_response(status, {"object": "error", "location": "https://www.omise.co/api-errors", "code": code, "message": message})


# What the development server (fakes/app.py, `make run`) mounts at /omise, with its demo keys.
FAKE = FakeOmise
