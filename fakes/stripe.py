"""A fake Stripe API: Checkout Sessions, PaymentIntents (with ``latest_charge``) and refunds,
form-encoded requests and Stripe's JSON objects and error shape, as the stripe SDK speaks them
(https://docs.stripe.com/api). Idempotency keys replay the first answer, as Stripe does.

Test controls: ``complete(session_id)`` marks a session paid (creating its PaymentIntent and
charge), ``expire(session_id)``; ``sessions`` / ``intents`` hold the state.
"""

from __future__ import annotations

import itertools
import re
from urllib.parse import parse_qsl

from fakes.server import FakeApp, Request, Response, json_response


def decode_form(body: bytes) -> dict:
    """Stripe's nested form encoding (``line_items[0][price_data][currency]=usd``) -> dicts."""
    result: dict = {}
    for key, value in parse_qsl(body.decode(), keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        node = result
        for part, following in zip(parts, parts[1:]):
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return result


class FakeStripe(FakeApp):
    def __init__(self, api_key: str = "sk_test_fake") -> None:
        super().__init__()
        self.api_key = api_key
        self.sessions: dict[str, dict] = {}
        self.intents: dict[str, dict] = {}
        self._idempotent: dict[str, Response] = {}
        self._ids = itertools.count(1)

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}FAKE"

    # --- test controls ---------------------------------------------------------------------

    def complete(self, session_id: str, *, paid: bool = True) -> dict:
        with self.lock:
            session = self.sessions[session_id]
            intent_id = self._id("pi_")
            session.update(status="complete", payment_status="paid" if paid else "unpaid", payment_intent=intent_id)
            self.intents[intent_id] = {
                "id": intent_id,
                "object": "payment_intent",
                "amount": session["amount_total"],
                "currency": session["currency"],
                "status": "succeeded" if paid else "processing",
                "metadata": session["metadata"],
                "latest_charge": {
                    "id": self._id("ch_"),
                    "object": "charge",
                    "amount": session["amount_total"],
                    "amount_refunded": 0,
                    "currency": session["currency"],
                    "payment_intent": intent_id,
                },
            }
            return session

    def expire(self, session_id: str) -> None:
        with self.lock:
            self.sessions[session_id].update(status="expired")

    # --- the API ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Invalid API Key provided", "invalid_request_error")
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key and key in self._idempotent:
            return self._idempotent[key]
        response = self._route(request)
        if request.method == "POST" and key and response[0] < 500:
            self._idempotent[key] = response
        return response

    def _route(self, request: Request) -> Response:
        path = request.path
        if request.method == "POST" and path == "/v1/checkout/sessions":
            return self._create_session(decode_form(request.body))
        if request.method == "GET" and (match := re.fullmatch(r"/v1/checkout/sessions/([\w]+)", path)):
            session = self.sessions.get(match.group(1))
            return json_response(200, session) if session else _error(404, "No such checkout.session", "invalid_request_error")
        if request.method == "GET" and (match := re.fullmatch(r"/v1/payment_intents/([\w]+)", path)):
            intent = self.intents.get(match.group(1))
            if intent is None:
                return _error(404, "No such payment_intent", "invalid_request_error")
            expand = request.query.get("expand[0]", []) + request.query.get("expand[]", [])
            body = dict(intent)
            if "latest_charge" not in expand:
                body["latest_charge"] = intent["latest_charge"]["id"]
            return json_response(200, body)
        if request.method == "POST" and path == "/v1/refunds":
            return self._refund(decode_form(request.body))
        return _error(404, f"Unrecognized request URL ({request.method}: {path})", "invalid_request_error")

    def _create_session(self, form: dict) -> Response:
        try:
            item = form["line_items"]["0"]
            price = item["price_data"]
            amount = int(price["unit_amount"]) * int(item.get("quantity", "1"))
            currency = price["currency"]
            success_url, cancel_url = form["success_url"], form["cancel_url"]
        except (KeyError, ValueError) as exc:
            return _error(400, f"Missing required param: {exc}", "invalid_request_error")
        if form.get("mode") != "payment":
            return _error(400, "Invalid mode", "invalid_request_error")
        with self.lock:
            session_id = self._id("cs_test_")
            session = {
                "id": session_id,
                "object": "checkout.session",
                "mode": "payment",
                "status": "open",
                "payment_status": "unpaid",
                "amount_total": amount,
                "currency": currency,
                "client_reference_id": form.get("client_reference_id"),
                "metadata": form.get("metadata", {}),
                "payment_intent": None,
                "success_url": success_url,
                "cancel_url": cancel_url,
                "url": f"https://checkout.stripe.test/c/pay/{session_id}",
                "livemode": False,
            }
            self.sessions[session_id] = session
        return json_response(200, session)

    def _refund(self, form: dict) -> Response:
        with self.lock:
            intent = self.intents.get(form.get("payment_intent", ""))
            if intent is None:
                return _error(404, "No such payment_intent", "invalid_request_error")
            charge = intent["latest_charge"]
            amount = int(form.get("amount") or charge["amount"] - charge["amount_refunded"])
            if charge["amount_refunded"] + amount > charge["amount"]:
                return _error(400, "Refund amount is greater than unrefunded amount on charge", "invalid_request_error")
            charge["amount_refunded"] += amount
            return json_response(
                200,
                {"id": self._id("re_"), "object": "refund", "amount": amount, "currency": charge["currency"],
                 "payment_intent": intent["id"], "charge": charge["id"], "status": "succeeded",
                 "metadata": form.get("metadata", {})},
            )


def _error(status: int, message: str, kind: str) -> Response:
    return json_response(status, {"error": {"message": message, "type": kind}})
