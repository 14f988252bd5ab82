"""The dummy provider: the whole payment flow with no outside service, for development,
demos and tests.

Its webhooks are signed like a real provider's, so they travel the same path:
``X-Dummy-Signature: sha256=<hex HMAC-SHA256 of the body>`` keyed with the account's webhook
secret. Body::

    {"id": "devt_...", "type": "payment.succeeded" | "payment.failed" | "payment.refunded",
     "data": {"txn_id": "dtxn_...", "reference": "<our reference>", "amount_minor": 100000,
              "currency": "UGX", "student_id": "prov-001", "refunded_minor": 0}}

Amounts are integers in ISO minor units.

Its "hosted checkout" is this service's own page ``/payments/simulate/<payment id>``: the payer
picks an outcome there, the page records it as the dummy provider's state (in
``Payment.provider_data["dummy"]``, which ``fetch_status`` reads back) and posts the signed
webhook above to ``/api/webhooks/dummy/<school code>``, exactly as a real provider would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from django.conf import settings
from django.urls import reverse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from core.money import MAX_MINOR_AMOUNT
from core.status import PaymentStatus
from providers.base import CheckoutResult, HmacHeaderAdapter, NormalizedEvent, NormalizedStatus, ReturnUrls
from providers.common import CurrencyCode
from providers.dummy.wire import dummy_delivery, dummy_event
from providers.errors import OperationNotSupported, ProviderRejected
from providers.wire import Params

if TYPE_CHECKING:
    from payments.models import Payment, ProviderAccount

EVENT_STATUS = {
    "payment.succeeded": PaymentStatus.SUCCEEDED,
    "payment.failed": PaymentStatus.FAILED,
    "payment.refunded": PaymentStatus.SUCCEEDED,  # paid, then refunded: refunded_minor says how much
}


class DummyPaymentData(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    txn_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    reference: Annotated[str, StringConstraints(max_length=64)] = ""
    amount_minor: Annotated[StrictInt, Field(gt=0, le=MAX_MINOR_AMOUNT)]
    currency: CurrencyCode
    student_id: Annotated[str, StringConstraints(max_length=128)] = ""
    refunded_minor: Annotated[StrictInt, Field(ge=0, le=MAX_MINOR_AMOUNT)] = 0


class DummyWebhook(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    type: Literal["payment.succeeded", "payment.failed", "payment.refunded"]
    data: DummyPaymentData


class DummyProvider(HmacHeaderAdapter):
    slug = "dummy"
    display_name = "Dummy (development)"
    verification_method = "HMAC-SHA256 of the body (X-Dummy-Signature)"
    signature_header = "X-Dummy-Signature"  # sha256=<hex HMAC-SHA256 of the body>
    signature_prefix = "sha256="

    def parse(self, *, payload: dict[str, Any], headers: Mapping[str, str], account) -> NormalizedEvent:
        event = self.validate(DummyWebhook, payload)
        status = EVENT_STATUS[event.type]
        data = event.data
        refunded = event.type == "payment.refunded"
        return NormalizedEvent(
            event_id=event.id,
            event_type=event.type,
            status=status,
            external_txn_id=data.txn_id,
            amount_minor=data.amount_minor,
            currency=data.currency,
            reference=data.reference,
            provider_student_id=data.student_id,
            refunded_total_minor=(data.refunded_minor or data.amount_minor) if refunded else None,
            raw=payload,
        )

    # --- Payment API: the provider's "state" is what the simulate page recorded ----------------

    @property
    def checkout_enabled(self) -> bool:
        """Off in production (``DUMMY_CHECKOUT_ENABLED``): its checkout takes no money."""
        return settings.DUMMY_CHECKOUT_ENABLED

    def create_checkout(self, *, payment: Payment, return_urls: ReturnUrls) -> CheckoutResult:
        if not self.checkout_enabled:
            raise OperationNotSupported("The dummy provider's checkout is switched off (DUMMY_CHECKOUT_ENABLED)")
        return CheckoutResult(
            redirect_url=settings.PUBLIC_BASE_URL + reverse("payment-simulate", args=[payment.pk]),
            checkout_id=f"dchk_{payment.pk.hex}",
            provider_data={"dummy_return_url": return_urls.success_url},
        )

    def fetch_status(self, *, payment: Payment) -> NormalizedStatus:
        if not payment.provider_checkout_id:
            raise ProviderRejected("Dummy (development) knows no checkout for this payment")
        state = payment.provider_data.get("dummy")
        if not state:
            return NormalizedStatus(status=PaymentStatus.PENDING, detail="the payer has not answered yet")
        return NormalizedStatus(
            status=PaymentStatus(state["outcome"]),
            external_txn_id=state["txn_id"],
            amount_minor=state["amount_minor"],
            currency=state["currency"],
        )

    def simulated_webhook(self, *, payment: Payment, account: ProviderAccount) -> tuple[bytes, dict[str, str]]:
        """The signed webhook the dummy provider sends for what the payer did on its page."""
        state = payment.provider_data["dummy"]
        kind = f"payment.{state['outcome']}"
        params = Params(
            event_id=f"devt_{payment.pk.hex}_{state['outcome']}",
            txn_id=state["txn_id"],
            reference=payment.reference or "",
            amount_minor=state["amount_minor"],
            currency=state["currency"],
            student_id=payment.provider_student_id,
        )
        delivery = dummy_delivery(dummy_event(kind, params), account.webhook_secret)
        return delivery.body, {"Content-Type": "application/json", **delivery.headers}

    def send_webhook(self, *, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST the webhook to ``url``; returns the HTTP status (0 when it could not be sent: the
        janitor's ``fetch_status`` then finds the payment's state instead)."""
        import httpx

        try:
            with self.http_client() as client:
                return client.post(url, content=body, headers=dict(headers)).status_code
        except httpx.HTTPError:
            return 0
