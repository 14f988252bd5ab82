"""A provider that works like M-Pesa's STK Push, for tests: ``create_checkout`` sends a prompt to
the payer's phone through the provider's API and there is no page to redirect to;
``fetch_status`` asks the API how the prompt ended. Its callbacks are not trusted alone.

The adapter is registered through the real registry (monkeypatch) and talks over a real socket
to ``FakePromptPay``, a local server speaking this small API::

    POST /v1/prompts      Authorization: Bearer <api key>
        {"phone": "2547...", "amount_minor": 150000, "currency": "KES", "reference": "P...", "callback_url": "..."}
        -> 201 {"prompt_id": "pp_...", "message": "Prompt sent"}
    GET  /v1/prompts/<prompt_id>
        -> 200 {"prompt_id": ..., "status": "pending" | "succeeded" | "failed" | "cancelled",
                "amount_minor": 150000, "currency": "KES", "receipt": "QK..."}
        -> 404 {"message": "unknown prompt"}
"""

from __future__ import annotations

import itertools
import threading

from core.status import PaymentStatus
from fakes.server import FakeApp, Request, Response, json_response
from providers.base import CheckoutResult, NormalizedEvent, NormalizedStatus, ProviderAdapter

API_KEY = "pp-test-key"


class PromptPayProvider(ProviderAdapter):
    slug = "promptpay"
    display_name = "PromptPay (test)"
    checkout_requires_phone = True
    api_base_url_setting = "PROMPTPAY_API_BASE_URL"
    api_timeout_seconds = 2.0

    def verify_signature(self, *, body, headers, account, query):
        pass  # like M-Pesa: nothing is signed; the event is confirmed with fetch_status

    def parse(self, *, payload, headers, account):
        return NormalizedEvent(
            event_id=payload["prompt_id"] + ":" + payload["status"],
            event_type="prompt.callback",
            status=PaymentStatus(payload["status"]),
            checkout_id=payload["prompt_id"],
            amount_minor=payload.get("amount_minor", 0),
            currency=payload.get("currency", ""),
            requires_confirmation=True,
        )

    def create_checkout(self, *, payment, return_urls):
        with self.http_client() as client:
            data = self.request_json(
                client,
                "POST",
                f"{self.api_base_url()}/v1/prompts",
                headers={"Authorization": f"Bearer {payment.account.api_key}"},
                json={
                    "phone": payment.payer["phone"],
                    "amount_minor": payment.amount_minor,
                    "currency": payment.currency,
                    "reference": payment.reference,
                    "callback_url": return_urls.callback_url,
                },
            )
        return CheckoutResult(
            checkout_id=data["prompt_id"], prompt_sent=True, message=data.get("message", ""), provider_data={"promptpay": True}
        )

    def fetch_status(self, *, payment):
        with self.http_client() as client:
            data = self.request_json(
                client,
                "GET",
                f"{self.api_base_url()}/v1/prompts/{payment.provider_checkout_id}",
                headers={"Authorization": f"Bearer {payment.account.api_key}"},
            )
        return NormalizedStatus(
            status=PaymentStatus(data["status"]),
            external_txn_id=data.get("receipt", ""),
            amount_minor=data.get("amount_minor"),
            currency=data.get("currency", ""),
        )


class FakePromptPay(FakeApp):
    """The provider's side. ``settle(prompt_id, status, amount_minor=None)`` is the payer
    answering the prompt; ``fail_next(n, status)`` answers the next n calls with an error;
    ``delay_seconds`` slows every answer (a slow provider)."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._failures: list[int] = []
        self.delay_seconds = 0.0

    def fail_next(self, count: int, status: int = 503) -> None:
        with self.lock:
            self._failures.extend([status] * count)

    def settle(self, prompt_id: str, status: str, amount_minor: int | None = None) -> None:
        with self.lock:
            prompt = self.prompts[prompt_id]
            prompt["status"] = status
            if amount_minor is not None:
                prompt["amount_minor"] = amount_minor
            if status == "succeeded":
                prompt["receipt"] = f"QK{prompt_id[-4:].upper()}RCPT"

    def handle(self, request: Request) -> Response:
        if self.delay_seconds:
            threading.Event().wait(self.delay_seconds)
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return json_response(401, {"message": "bad key"})
        with self.lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure:
            return json_response(failure, {"message": "simulated outage"})
        if request.method == "POST" and request.path == "/v1/prompts":
            body = request.json()
            prompt_id = f"pp_{next(self._ids):06d}"
            with self.lock:
                self.prompts[prompt_id] = {
                    "prompt_id": prompt_id,
                    "status": "pending",
                    "amount_minor": body["amount_minor"],
                    "currency": body["currency"],
                    "phone": body["phone"],
                    "reference": body["reference"],
                }
            return json_response(201, {"prompt_id": prompt_id, "message": "Prompt sent"})
        if request.method == "GET" and request.path.startswith("/v1/prompts/"):
            with self.lock:
                prompt = self.prompts.get(request.path.rsplit("/", 1)[-1])
                prompt = dict(prompt) if prompt else None
            if prompt is None:
                return json_response(404, {"message": "unknown prompt"})
            return json_response(200, prompt)
        return json_response(404, {"message": "not found"})
