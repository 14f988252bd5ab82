"""The dummy provider: the whole payment flow with no outside service, for development,
demos and tests.

Its webhooks are signed like a real provider's, so they travel the same path:
``X-Dummy-Signature: sha256=<hex HMAC-SHA256 of the body>`` keyed with the account's webhook
secret. Body::

    {"id": "devt_...", "type": "payment.succeeded" | "payment.failed" | "payment.refunded",
     "data": {"txn_id": "dtxn_...", "reference": "<our reference>", "amount_minor": 100000,
              "currency": "UGX", "student_id": "prov-001", "refunded_minor": 0}}

Amounts are integers in ISO minor units.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, field_validator

from payments.money import MAX_MINOR_AMOUNT, MoneyError, currency_code
from payments.state import PaymentStatus
from providers.base import NormalizedEvent, ProviderAdapter
from providers.errors import SignatureInvalid, SignatureMissing

EVENT_STATUS = {
    "payment.succeeded": PaymentStatus.SUCCEEDED,
    "payment.failed": PaymentStatus.FAILED,
    "payment.refunded": PaymentStatus.REFUNDED,
}


class DummyPaymentData(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    txn_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    reference: Annotated[str, StringConstraints(max_length=64)] = ""
    amount_minor: Annotated[StrictInt, Field(gt=0, le=MAX_MINOR_AMOUNT)]
    currency: str
    student_id: Annotated[str, StringConstraints(max_length=128)] = ""
    refunded_minor: Annotated[StrictInt, Field(ge=0, le=MAX_MINOR_AMOUNT)] = 0

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        try:
            return currency_code(value)
        except MoneyError as exc:
            raise ValueError(str(exc)) from exc


class DummyWebhook(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    type: Literal["payment.succeeded", "payment.failed", "payment.refunded"]
    data: DummyPaymentData


class DummyProvider(ProviderAdapter):
    slug = "dummy"
    display_name = "Dummy (development)"
    verification_method = "HMAC-SHA256 of the body (X-Dummy-Signature)"
    signature_header = "X-Dummy-Signature"

    def verify_signature(self, *, body: bytes, headers: Mapping[str, str], account, query) -> None:
        header = headers.get(self.signature_header, "")
        if not header:
            raise SignatureMissing(f"Missing {self.signature_header} header")
        scheme, _, signature = header.partition("=")
        if scheme != "sha256" or not self.hmac_matches(
            secrets=account.webhook_secrets(), message=body, signature=signature
        ):
            raise SignatureInvalid(f"{self.signature_header} does not match the body")

    def parse(self, *, payload: dict[str, Any], headers: Mapping[str, str], account) -> NormalizedEvent:
        event = self.validate(DummyWebhook, payload)
        status = EVENT_STATUS[event.type]
        data = event.data
        return NormalizedEvent(
            event_id=event.id,
            event_type=event.type,
            status=status,
            external_txn_id=data.txn_id,
            amount_minor=data.amount_minor,
            currency=data.currency,
            reference=data.reference,
            provider_student_id=data.student_id,
            refunded_total_minor=(data.refunded_minor or data.amount_minor)
            if status == PaymentStatus.REFUNDED
            else None,
            raw=payload,
        )
