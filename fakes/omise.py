"""A fake Omise API: charges (form-encoded, HTTP Basic with the secret key), charge retrieval and
refunds (https://docs.omise.co/charges-api , https://docs.omise.co/refunds-api).

Test controls: ``settle(charge_id, "successful" | "failed")``; ``charges`` by id.
"""

from __future__ import annotations

import base64
import itertools
import re
from urllib.parse import parse_qsl

from fakes.server import FakeApp, Request, Response, json_response


class FakeOmise(FakeApp):
    def __init__(self, secret_key: str = "skey_test_fake") -> None:
        super().__init__()
        self.secret_key = secret_key
        self.charges: dict[str, dict] = {}
        self._ids = itertools.count(1)

    def settle(self, charge_id: str, status: str = "successful") -> dict:
        with self.lock:
            charge = self.charges[charge_id]
            charge.update(status=status, paid=status == "successful")
            return charge

    def handle(self, request: Request) -> Response:
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
                "refunded_amount": 0, "return_uri": form.get("return_uri"),
                "authorize_uri": f"https://pay.omise.test/offsites/ofsp_test_{n}/pay",
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
        if request.method == "POST" and (match := re.fullmatch(r"/charges/(\w+)/refunds", request.path)):
            form = dict(parse_qsl(request.body.decode()))
            with self.lock:
                charge = self.charges.get(match.group(1))
                if charge is None:
                    return _error(404, "not_found", "charge was not found")
                amount = int(form.get("amount", "0"))
                if charge["status"] != "successful" or charge["refunded_amount"] + amount > charge["amount"]:
                    return _error(400, "invalid_charge", "charge can't be refunded")
                charge["refunded_amount"] += amount
                refund = {"object": "refund", "id": f"rfnd_test_{next(self._ids):019d}", "amount": amount,
                          "currency": charge["currency"], "charge": charge["id"], "livemode": charge["livemode"]}
            return json_response(200, refund)
        return _error(404, "not_found", "path not found")


def _error(status: int, code: str, message: str) -> Response:
    return json_response(status, {"object": "error", "location": "https://www.omise.co/api-errors", "code": code, "message": message})
