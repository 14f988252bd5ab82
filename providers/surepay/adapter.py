"""SurePay and similar school-fee aggregators: the generic aggregator scheme of docs/design.md.

- ``X-School-Code``: the school's code (or the school code in the webhook URL).
- ``X-Signature``: hex HMAC-SHA256 of the raw body, keyed with the account's webhook secret.
- Body: ``event_id``, ``external_txn_id``, ``amount`` (string in major units, may carry
  thousands separators), ``currency``, ``status`` (SUCCEEDED, FAILED, PENDING, REVERSED),
  ``provider_student_id`` and an optional ``raw`` object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationInfo, field_validator

from core.status import PaymentStatus
from providers.base import HmacHeaderAdapter, NormalizedEvent, RefundReport
from providers.common import CurrencyCode, major_units, minor_or_error

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]

# REVERSED is not an outcome of the charge but money going back: see ``parse``.
STATUS_MAP = {
    "SUCCEEDED": PaymentStatus.SUCCEEDED,
    "FAILED": PaymentStatus.FAILED,
    "PENDING": PaymentStatus.PENDING,
}


class SurePayWebhook(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    external_txn_id: Identifier
    # currency is declared before amount so the amount validator can see it.
    currency: CurrencyCode
    amount: Any
    status: Literal["SUCCEEDED", "FAILED", "PENDING", "REVERSED"]
    provider_student_id: Identifier
    raw: dict[str, Any] | None = None

    @field_validator("amount")
    @classmethod
    def _amount_in_minor_units(cls, value: Any, info: ValidationInfo) -> int:
        # Major units, possibly with thousands separators ("100,000"); nothing to check against
        # when the currency failed (its error is reported on its own field).
        minor = minor_or_error(major_units, value, info.data.get("currency"))
        if info.data.get("currency") and minor <= 0:
            raise ValueError("amount must be greater than zero")
        return minor


class SurePayProvider(HmacHeaderAdapter):
    slug = "surepay"
    display_name = "SurePay"
    verification_method = "HMAC-SHA256 of the body (X-Signature)"
    signature_header = "X-Signature"  # hex HMAC-SHA256 of the body

    def parse(self, *, payload: dict[str, Any], headers: Mapping[str, str], account) -> NormalizedEvent:
        event = self.validate(SurePayWebhook, payload)
        reversal = event.status == "REVERSED"
        return NormalizedEvent(
            event_id=event.event_id,
            event_type=f"payment.{event.status.lower()}",
            status=None if reversal else STATUS_MAP[event.status],
            external_txn_id=event.external_txn_id,
            amount_minor=0 if reversal else event.amount,
            currency=event.currency,
            provider_student_id=event.provider_student_id,
            # A reversal returns ``amount`` (all or part of the payment) to the payer. SurePay
            # gives it no id of its own: the event keys it, so each reversal counts once.
            refunds=(RefundReport(key="", amount_minor=event.amount),) if reversal else (),
            raw=payload,
        )
