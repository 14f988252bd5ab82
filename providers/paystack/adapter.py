"""Paystack: hosted checkout (transaction/initialize), webhooks signed with the secret API key.

Webhook (https://paystack.com/docs/payments/webhooks/ ; official snippets in
github.com/PaystackOSS/doc-code-snippets): ``x-paystack-signature`` is the hex HMAC-**SHA512** of
the raw body keyed with the account's secret key (``sk_test_...`` / ``sk_live_...``). There is no
separate webhook secret, so for Paystack the account's ``webhook_secret`` *is* its secret API key
(``signs_with_api_key``); during a key rotation the previous key keeps verifying until it expires.
No timestamp, so no replay window: the deterministic event id makes a replay a duplicate.

Paystack events carry no event id. Ours is built from the payload: ``<event>:<data.id>`` (the
transaction's or the refund's id), so a redelivery of the same notification is a duplicate.

Events: ``charge.success`` -> succeeded; ``charge.failed`` (if the account gets one) -> failed;
``refund.processed`` -> refund of ``data.amount`` (this refund's amount, a delta: Paystack does
not report a cumulative total); ``refund.pending/processing/failed`` and everything else
(``transfer.*``, ``subscription.*``...) are stored and concern no payment.

Amounts are integers in the currency's subunit (kobo, pesewas, cents): x100 of the major unit.
Paystack's multiplier for zero-decimal ISO currencies (XOF, RWF) is unconfirmed, so those are
refused rather than guessed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from core.money import MoneyError, exponent, scale_units
from core.status import PaymentStatus
from providers.base import (
    CheckoutResult,
    DisputeReport,
    HmacHeaderAdapter,
    NormalizedEvent,
    NormalizedStatus,
    RefundReport,
    RefundResult,
)
from providers.common import CurrencyCode, Identifier, NonEmpty, integer_units, metadata_text, minor_or_error
from providers.errors import PayloadInvalid, ProviderRejected

S = PaymentStatus

# Paystack's subunit is a hundredth of the major unit for every currency it documents.
PAYSTACK_EXPONENT = 2


def from_paystack_amount(value: Any, currency: str) -> int:
    """Paystack subunits -> ISO minor units; refused where ISO's exponent is not Paystack's 2."""
    if exponent(currency) != PAYSTACK_EXPONENT:
        raise MoneyError(f"Paystack's subunit for {currency} is unconfirmed; refusing to guess")
    return scale_units(integer_units(value), from_exponent=PAYSTACK_EXPONENT, to_exponent=exponent(currency), currency=currency)


def to_paystack_amount(amount_minor: int, currency: str) -> int:
    if exponent(currency) != PAYSTACK_EXPONENT:
        raise MoneyError(f"Paystack's subunit for {currency} is unconfirmed; refusing to guess")
    return amount_minor


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Customer(_Model):
    email: str | None = None
    customer_code: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None


class Transaction(_Model):
    id: int | Identifier
    reference: Identifier
    currency: CurrencyCode
    amount: Any
    status: str = ""
    domain: str = "live"
    # Free-form: an object, or "", null or 0 when the checkout had none (Paystack's own samples
    # show all of these); only our student id is read from it, when it is an object.
    metadata: Any = None
    customer: Customer | None = None

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: Any, info: ValidationInfo) -> int:
        return minor_or_error(from_paystack_amount, value, info.data.get("currency"))


class Refund(_Model):
    """A refund notice. It carries no refund id (https://paystack.com/docs/payments/webhooks,
    refund events): only the transaction's reference, and ``refund_reference`` once processed
    or failed (null while pending or processing)."""

    transaction_reference: Identifier
    refund_reference: Identifier | None = None
    currency: CurrencyCode
    amount: Any
    status: str = ""
    domain: str = "live"

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: Any, info: ValidationInfo) -> int:
        return minor_or_error(from_paystack_amount, value, info.data.get("currency"))


class DisputedTransaction(_Model):
    id: int | Identifier
    reference: Identifier
    currency: CurrencyCode | None = None


class Dispute(_Model):
    """A chargeback (https://paystack.com/docs/payments/webhooks, charge.dispute.*): the charge
    is in ``transaction`` (the top-level ``transaction_reference`` is null in Paystack's samples),
    the disputed amount in ``refund_amount``."""

    id: int | Identifier
    transaction: DisputedTransaction
    currency: CurrencyCode
    refund_amount: Any
    status: str = ""
    resolution: str | None = None
    domain: str = "live"

    @field_validator("refund_amount")
    @classmethod
    def _amount(cls, value: Any, info: ValidationInfo) -> int:
        return minor_or_error(from_paystack_amount, value, info.data.get("currency"))


class DisputeEvent(_Model):
    event: NonEmpty
    data: Dispute


class _Envelope(_Model):
    event: NonEmpty
    data: dict[str, Any]


class ChargeEvent(_Model):
    event: NonEmpty
    data: Transaction


class RefundEvent(_Model):
    event: NonEmpty
    data: Refund


CHARGE_EVENTS = {"charge.success": S.SUCCEEDED, "charge.failed": S.FAILED}
# Only a processed refund has returned money; a failed one returned none. Pending and processing
# announce one on its way, with nothing yet to identify it by: they record nothing.
REFUND_EVENTS = {
    "refund.processed": "succeeded",
    "refund.pending": None,
    "refund.processing": None,
    "refund.failed": "failed",
}

# A refund's status in Paystack's refund API -> the ledger's: pending, processing and
# needs-attention are all still on their way.
PAYSTACK_REFUND_STATUS = {"processed": "succeeded", "failed": "failed"}

DISPUTE_EVENTS = {"charge.dispute.create", "charge.dispute.remind", "charge.dispute.resolve"}
# A resolved dispute: accepted by the merchant, or by Paystack for a merchant who did not answer,
# means the customer keeps the money; declined means the merchant contested it and kept it.
DISPUTE_RESOLUTIONS = {"merchant-accepted": "lost", "auto-accepted": "lost", "declined": "won"}

# transaction/verify's data.status -> ours. "abandoned" is Paystack's initial state for a checkout
# that has not been completed yet, so it is still open.
VERIFY_STATUS = {
    "success": S.SUCCEEDED,
    "failed": S.FAILED,
    "reversed": S.SUCCEEDED,  # paid, then the whole amount went back (see fetch_status)
    "abandoned": S.PENDING,
    "ongoing": S.PENDING,
    "pending": S.PENDING,
    "processing": S.PROCESSING,
    "queued": S.PROCESSING,
}


class PaystackProvider(HmacHeaderAdapter):
    slug = "paystack"
    display_name = "Paystack"
    verification_method = "x-paystack-signature (HMAC-SHA512 of the body, keyed with the secret API key)"
    api_base_url_setting = "PAYSTACK_API_BASE_URL"
    signs_with_api_key = True
    test_key_marker = "sk_test_"
    checkout_requires_email = True  # transaction/initialize: email and amount are required
    refund_events_name_the_refund = False  # refund.* webhooks carry no refund id
    signature_header = "x-paystack-signature"  # hex HMAC-SHA512 of the body
    hmac_algorithm = "sha512"

    def parse(self, *, payload: dict[str, Any], headers: Mapping[str, str], account) -> NormalizedEvent:
        envelope = self.validate(_Envelope, payload)
        kind = envelope.event
        expected_domain = "test" if account.test_mode else "live"
        other_mode = f"a {'live' if account.test_mode else 'test'}-mode event on a {expected_domain} account"
        if kind in CHARGE_EVENTS:
            txn = self.validate(ChargeEvent, payload, event_type=kind).data
            customer = txn.customer.model_dump(exclude_none=True) if txn.customer else {}
            same_mode = txn.domain == expected_domain
            return NormalizedEvent(
                event_id=f"{kind}:{txn.id}",
                event_type=kind,
                # A test-mode event never moves money on a live account (and vice versa).
                status=CHARGE_EVENTS[kind] if same_mode else None,
                ignored_reason="" if same_mode else other_mode,
                external_txn_id=str(txn.id),
                amount_minor=txn.amount,
                currency=txn.currency,
                reference=txn.reference,
                provider_student_id=metadata_text(txn.metadata, "student_id"),
                payer={k: v for k, v in customer.items() if v},
                raw=payload,
            )
        if kind in REFUND_EVENTS:
            refund = self.validate(RefundEvent, payload, event_type=kind).data
            state = REFUND_EVENTS[kind] if refund.domain == expected_domain else None
            if refund.domain != expected_domain:
                reason = other_mode
            elif state is None:
                reason = f"{kind}: the refund is not done yet (Paystack names it only once processed)"
            else:
                reason = ""
            # A redelivery of the same notice is the same event; the refund is keyed by Paystack's
            # refund reference (each refund's own amount, not a running total).
            return NormalizedEvent(
                event_id=f"{kind}:{refund.transaction_reference}:{refund.refund_reference or refund.amount}"[:255],
                event_type=kind,
                status=None,
                currency=refund.currency,
                reference=refund.transaction_reference,
                refunds=(RefundReport(key=refund.refund_reference or "", amount_minor=refund.amount, status=state),)
                if state
                else (),
                ignored_reason=reason,
                raw=payload,
            )
        if kind in DISPUTE_EVENTS:
            dispute = self.validate(DisputeEvent, payload, event_type=kind).data
            if dispute.resolution is not None and dispute.resolution not in DISPUTE_RESOLUTIONS:
                self._invalid("data.resolution", f"unknown dispute resolution {dispute.resolution!r}", kind)
            state = DISPUTE_RESOLUTIONS.get(dispute.resolution or "", "open") if kind.endswith("resolve") else "open"
            same_mode = dispute.domain == expected_domain
            return NormalizedEvent(
                event_id=f"{kind}:{dispute.id}",
                event_type=kind,
                status=None,
                external_txn_id=str(dispute.transaction.id),
                reference=dispute.transaction.reference,
                currency=dispute.currency,
                disputes=(DisputeReport(key=str(dispute.id), amount_minor=dispute.refund_amount, status=state),)
                if same_mode
                else (),
                ignored_reason="" if same_mode else other_mode,
                raw=payload,
            )
        data = envelope.data
        key = data.get("id") or data.get("reference") or data.get("transfer_code") or hashlib.sha256(
            repr(sorted(data.items())).encode()
        ).hexdigest()[:32]
        return NormalizedEvent(
            event_id=f"{kind}:{key}"[:255],
            event_type=kind,
            status=None,
            ignored_reason=f"{kind} is not about a payment, a refund or a chargeback",
            raw=payload,
        )

    @staticmethod
    def _invalid(field: str, message: str, event_type: str):
        raise PayloadInvalid([{"field": field, "message": message}], event_type=event_type)

    # --- Payment API (https://github.com/PaystackOSS/openapi) ---------------------------------

    def _headers(self, account) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret_api_key(account)}", "Accept": "application/json"}

    def create_checkout(self, *, payment, return_urls) -> CheckoutResult:
        email = (payment.payer or {}).get("email")
        if not email:
            raise ProviderRejected("Paystack needs the payer's email address to start a checkout")
        if not payment.reference:
            raise ProviderRejected("The payment has no reference to give Paystack")
        try:
            amount = to_paystack_amount(payment.amount_minor, payment.currency)
        except MoneyError as exc:
            raise ProviderRejected(str(exc)) from exc
        metadata = {"payment_id": str(payment.pk), "school": payment.school.code, "cancel_action": return_urls.cancel_url}
        if payment.provider_student_id:
            metadata["student_id"] = payment.provider_student_id
        body = {
            "email": email,
            "amount": amount,
            "currency": payment.currency,
            "reference": payment.reference,
            "callback_url": return_urls.success_url,
            "metadata": metadata,
        }
        with self.http_client() as client:
            data = self.request_json(
                client, "POST", f"{self.api_base_url()}/transaction/initialize", json=body, headers=self._headers(payment.account)
            )
        result = data.get("data") or {}
        if not data.get("status") or not result.get("authorization_url"):
            raise ProviderRejected(f"Paystack did not start the checkout: {data.get('message', 'no message')}")
        return CheckoutResult(
            redirect_url=result["authorization_url"],
            provider_data={"paystack_access_code": result.get("access_code", "")},
        )

    def fetch_status(self, *, payment) -> NormalizedStatus:
        if not payment.reference:
            raise ProviderRejected("The payment has no reference to look up at Paystack")
        url = f"{self.api_base_url()}/transaction/verify/{quote(payment.reference, safe='')}"
        with self.http_client() as client:
            data = self.request_json(client, "GET", url, headers=self._headers(payment.account))
        txn = data.get("data") or {}
        status = VERIFY_STATUS.get(str(txn.get("status")))
        if status is None:
            raise ProviderRejected(f"Paystack reported an unknown status {txn.get('status')!r}")
        currency = str(txn.get("currency", "")).upper()
        try:
            amount = from_paystack_amount(txn.get("amount"), currency)
        except (MoneyError, KeyError) as exc:
            raise ProviderRejected(f"Paystack reported an amount we cannot take exactly: {txn.get('amount')!r}") from exc
        return NormalizedStatus(
            status=status,
            external_txn_id=str(txn.get("id", "")),
            amount_minor=amount,
            currency=currency,
            refunded_total_minor=amount if txn.get("status") == "reversed" else None,
            detail=str(txn.get("gateway_response") or txn.get("status")),
        )

    def refund(self, *, payment, amount_minor: int, idempotency_key: str, reason: str = "") -> RefundResult:
        """``POST /refund`` (https://github.com/PaystackOSS/openapi, RefundCreate): the transaction
        by its reference, the amount in subunits. Paystack documents no idempotency key for
        refunds, so a refund whose answer was lost must never be sent again by itself: the
        caller allows one unanswered refund per payment and leaves a lost answer to staff. The
        answer's ``data.id`` names the refund; Paystack's refund webhooks do not carry it."""
        transaction = payment.reference or payment.provider_reference or payment.external_txn_id
        if not transaction:
            raise ProviderRejected("The payment has no Paystack reference to refund")
        try:
            amount = to_paystack_amount(amount_minor, payment.currency)
        except MoneyError as exc:
            raise ProviderRejected(str(exc)) from exc
        body = {"transaction": transaction, "amount": amount, "currency": payment.currency}
        if reason:
            body["merchant_note"] = reason[:500]
        with self.http_client() as client:
            data = self.request_json(
                client, "POST", f"{self.api_base_url()}/refund", json=body, headers=self._headers(payment.account)
            )
        refund = data.get("data") or {}
        if not data.get("status") or not refund.get("id"):
            raise ProviderRejected(f"Paystack did not create the refund: {data.get('message', 'no message')}")
        currency = str(refund.get("currency") or payment.currency).upper()
        try:
            refunded = from_paystack_amount(refund.get("amount", amount), currency)
        except MoneyError as exc:
            raise ProviderRejected(f"Paystack answered a refund amount we cannot take exactly: {refund.get('amount')!r}") from exc
        return RefundResult(
            refund_id=str(refund["id"]),
            status=PAYSTACK_REFUND_STATUS.get(str(refund.get("status")), "pending"),
            amount_minor=refunded,
            detail=str(refund.get("status") or data.get("message", "")),
        )
