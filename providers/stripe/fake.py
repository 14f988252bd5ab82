"""A fake Stripe API: Checkout Sessions, PaymentIntents (with ``latest_charge``) and refunds,
form-encoded requests and Stripe's JSON objects and error shape, as the stripe SDK speaks them
(https://docs.stripe.com/api). Idempotency keys replay the first answer, as Stripe does.

Test controls: ``complete(session_id)`` marks a session paid (creating its PaymentIntent and
charge), ``expire(session_id)``; ``sessions`` / ``intents`` hold the state.

Hosted checkout (the demo, ``make run``): with ``public_url`` set, a session's ``url`` is this
fake's page ``/checkout/<session id>``. "Pay" completes the session, delivers a signed
``checkout.session.completed`` event to each of ``webhook_endpoints`` (as Stripe does,
https://docs.stripe.com/webhooks#verify-manually) and sends the browser to the session's
``success_url``; "Back" returns to its ``cancel_url``, as Stripe Checkout's back link does.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import itertools
import json
import re
import time
from urllib.parse import parse_qsl

from fakes.server import FakeApp, Request, Response, form_fields, html_page, json_response, redirect


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
        self.refunds: dict[str, dict] = {}
        self._idempotent: dict[str, Response] = {}
        self._in_progress: set[str] = set()
        self._ids = itertools.count(1)
        # The status a new refund starts in: "succeeded" for most cards, "pending" for others.
        self.refund_status = "succeeded"
        # Answer the next N POSTs only after this many seconds (the work is done at once): a
        # client that gives up first does not know whether it was.
        self.stall_seconds = 0.0
        self.stall_next = 0

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

    def settle_refund(self, refund_id: str, status: str = "succeeded") -> dict:
        """The refund leaves "pending" (Stripe's refund.updated follows); a failed one gives the
        money back to the charge."""
        with self.lock:
            refund = self.refunds[refund_id]
            if status == "failed" and refund["status"] != "failed":
                self._charge(refund["payment_intent"])["amount_refunded"] -= refund["amount"]
                refund["failure_reason"] = "expired_or_canceled_card"
            refund["status"] = status
            return dict(refund)

    def _charge(self, intent_id: str) -> dict:
        return self.intents[intent_id]["latest_charge"]

    # --- the API ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if (match := re.fullmatch(r"/checkout/([\w]+)", request.path)) and self.public_url:
            return self._hosted_checkout(request, match.group(1))
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Invalid API Key provided", "invalid_request_error")
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key:
            return self._route(request)
        # https://docs.stripe.com/api/idempotent_requests: the first answer is saved and replayed
        # for the same key (errors included, 5xx aside); one arriving while a request with that
        # key is still running is refused with 409.
        with self.lock:
            stall = self.stall_next > 0
            self.stall_next -= 1 if stall else 0
            replay = self._idempotent.get(key)
            busy = replay is None and key in self._in_progress
            if replay is None and not busy:
                self._in_progress.add(key)
        if replay is not None or busy:
            if stall:
                time.sleep(self.stall_seconds)
            return replay or _error(
                409, "There is currently another in-progress request using this Idempotent Key.", "idempotency_error"
            )
        try:
            response = self._route(request)
            with self.lock:
                if response[0] < 500:
                    self._idempotent[key] = response
        finally:
            with self.lock:
                self._in_progress.discard(key)
        if stall:
            time.sleep(self.stall_seconds)
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
        if request.method == "GET" and (match := re.fullmatch(r"/v1/refunds/([\w]+)", path)):
            refund = self.refunds.get(match.group(1))
            if refund is None:
                return _error(404, f"No such refund: '{match.group(1)}'", "invalid_request_error", code="resource_missing")
            return json_response(200, refund)
        return _error(404, f"Unrecognized request URL ({request.method}: {path})", "invalid_request_error")

    def _hosted_checkout(self, request: Request, session_id: str) -> Response:
        session = self.sessions.get(session_id)
        if session is None:
            return html_page(404, "Checkout not found", "<p>This checkout session does not exist.</p>")
        if request.method == "POST":
            if form_fields(request).get("action") == "back":
                return redirect(session["cancel_url"])
            if session["status"] == "open":
                session = self.complete(session_id)
                event = {
                    "id": self._id("evt_"), "object": "event", "type": "checkout.session.completed",
                    "created": int(time.time()), "livemode": False, "data": {"object": dict(session)},
                }  # fmt: skip
                self.deliver(json.dumps(event).encode(), stripe_signature_header)
            return redirect(session["success_url"])
        amount = f"{session['currency'].upper()} {session['amount_total']}"
        body = (
            "<p>Stripe test checkout (local fake): no money moves. Test card 4242 4242 4242 4242.</p>"
            f"<p>Amount: <strong>{html.escape(amount)}</strong> (Stripe's units)</p>"
            '<form method="post"><button type="submit" name="action" value="pay">Pay</button> '
            '<button type="submit" name="action" value="back">Back</button></form>'
        )
        return html_page(200, "Stripe checkout", body)

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
                "url": f"{self.public_url}/checkout/{session_id}" if self.public_url else f"https://checkout.stripe.test/c/pay/{session_id}",
                "livemode": False,
            }
            self.sessions[session_id] = session
        return json_response(200, session)

    def _refund(self, form: dict) -> Response:
        """What https://docs.stripe.com/api/refunds/create refuses: an unknown PaymentIntent, an
        amount that is not a positive integer, more than what is left of the charge."""
        with self.lock:
            intent_id = form.get("payment_intent", "")
            intent = self.intents.get(intent_id)
            if intent is None:
                return _error(404, f"No such payment_intent: '{intent_id}'", "invalid_request_error", code="resource_missing")
            charge = intent["latest_charge"]
            left = charge["amount"] - charge["amount_refunded"]
            if left == 0:
                return _error(400, f"Charge {charge['id']} has already been refunded.", "invalid_request_error", code="charge_already_refunded")
            raw = form.get("amount")
            if raw is not None and not (raw.isdigit() and int(raw) > 0):
                return _error(400, f"Invalid positive integer: {raw}", "invalid_request_error", code="parameter_invalid_integer")
            amount = int(raw) if raw is not None else left
            if amount > left:
                return _error(
                    400,
                    f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                    "invalid_request_error",
                    code="amount_too_large",
                )
            charge["amount_refunded"] += amount
            refund = {
                "id": self._id("re_"), "object": "refund", "amount": amount, "currency": charge["currency"],
                "payment_intent": intent["id"], "charge": charge["id"], "status": self.refund_status,
                "reason": form.get("reason"), "metadata": form.get("metadata", {}), "failure_reason": None,
            }  # fmt: skip
            self.refunds[refund["id"]] = refund
            return json_response(200, dict(refund))


def stripe_signature_header(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """``Stripe-Signature: t=<unix>,v1=<HMAC-SHA256 of "t.body" with the endpoint's secret>``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={timestamp},v1={digest}"}


def _error(status: int, message: str, kind: str, code: str | None = None) -> Response:
    error = {"message": message, "type": kind}
    if code:
        error["code"] = code
    return json_response(status, {"error": error})


# What the development server (fakes/app.py, `make run`) mounts at /stripe, with its demo keys.
FAKE = FakeStripe
