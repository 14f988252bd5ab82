"""Omise (Opn Payments): charges with a redirect source; webhooks re-fetched before trusted.

Webhook signature (https://docs.omise.co/api-webhooks): Omise "strongly recommends" verifying it;
the details we follow are those many independent integrations implement (secondary, not read on
Omise's own page): ``Omise-Signature`` is the hex HMAC-SHA256 of ``"<timestamp>." + raw body``
(a comma-separated list during Omise's secret rotation: any may match), keyed with the webhook
secret **base64-decoded**; ``Omise-Signature-Timestamp`` is Unix seconds, accepted within 5
minutes either way. A stored secret that is not valid base64 is used as its raw bytes.

Because those details are unconfirmed, and Omise's long-standing guidance (and its own
WooCommerce plugin) is to re-fetch the charge, every charge and refund event carries
``requires_confirmation``: the worker asks ``GET /charges/<id>`` and takes its status, amount and
``refunded_amount``.

Events: ``charge.*`` (``charge.complete`` with ``data.status`` successful / failed / pending /
expired / reversed), ``refund.create`` (``data`` is the refund; its ``charge`` names the charge).
Event id: the event's ``id`` (``evnt_...``). Amounts are in the smallest unit; JPY is Omise's only
zero-decimal currency, which matches ISO 4217 for everything Omise supports.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, ValidationInfo, field_validator

from core.money import MoneyError, exponent
from core.status import PaymentStatus
from providers.base import (
    CheckoutResult,
    DisputeReport,
    NormalizedEvent,
    NormalizedStatus,
    ProviderAdapter,
    RefundReport,
    RefundResult,
    field_errors,
)
from providers.common import CurrencyCode, Identifier, NonEmpty, metadata_text, minor_or_error
from providers.errors import PayloadInvalid, ProviderRejected, SignatureInvalid, SignatureMissing

S = PaymentStatus

TOLERANCE_SECONDS = 300
CHARGE_STATUS = {
    "successful": S.SUCCEEDED,
    "failed": S.FAILED,
    "pending": S.PENDING,
    "expired": S.EXPIRED,
    # A reversed charge was authorized but never captured: no money moved.
    "reversed": S.CANCELLED,
}


# A refund's status -> the ledger's: "closed" is a refund made, "pending" one on its way.
OMISE_REFUND_STATUS = {"closed": "succeeded", "pending": "pending", "failed": "failed"}


def omise_exponent(currency: str) -> int:
    return 0 if currency == "JPY" else 2


def from_omise_amount(value: Any, currency: str) -> int:
    """Omise's smallest unit -> ISO minor units (the same, for every currency Omise supports)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MoneyError(f"amount must be a whole number of units, got {value!r}")
    if omise_exponent(currency) != exponent(currency):
        raise MoneyError(f"Omise does not charge in {currency}")
    return value


def signing_key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        return secret.encode()


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class OmiseCharge(_Model):
    object: str = "charge"
    id: Identifier
    currency: CurrencyCode
    amount: StrictInt
    # Charges of API versions before 2015-11-05 have no ``status``: it follows from ``captured``,
    # ``authorized`` and ``failure_code`` (``charge_status``).
    status: str | None = None
    captured: Any = None
    authorized: Any = None
    paid: Any = None
    failure_code: Any = None
    livemode: StrictBool | None = None
    metadata: Any = None

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: Any, info: ValidationInfo) -> int:
        return minor_or_error(from_omise_amount, value, info.data.get("currency"))

    @property
    def charge_status(self) -> str:
        if self.status is not None:
            return self.status
        if self.failure_code:
            return "failed"
        if self.captured is True or self.paid is True:
            return "successful"
        return "pending"


class OmiseDispute(_Model):
    """https://docs.omise.co/disputes-api: open, pending (under review), won or lost."""

    object: str = "dispute"
    id: Identifier
    charge: Identifier
    currency: CurrencyCode
    amount: StrictInt
    status: str
    livemode: StrictBool | None = None

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: Any, info: ValidationInfo) -> int:
        return minor_or_error(from_omise_amount, value, info.data.get("currency"))


class OmiseRefund(_Model):
    id: Identifier
    charge: Identifier
    currency: CurrencyCode
    amount: StrictInt
    livemode: StrictBool | None = None
    # ``closed`` once done (refunds of older API versions have no status: they were done).
    status: str | None = None

    @property
    def refund_status(self) -> str:
        return REFUND_STATUS.get(self.status or "closed", "pending")

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: Any, info: ValidationInfo) -> int:
        return minor_or_error(from_omise_amount, value, info.data.get("currency"))


class _Envelope(_Model):
    id: NonEmpty
    key: NonEmpty
    livemode: StrictBool | None = None
    data: dict[str, Any]


class ChargeEvent(_Envelope):
    data: OmiseCharge


class RefundEvent(_Envelope):
    data: OmiseRefund


class DisputeEvent(_Envelope):
    data: OmiseDispute


DISPUTE_STATUS = {"open": "open", "pending": "open", "won": "won", "lost": "lost"}
# https://docs.omise.co/refunds-api: pending until closed; a reversed refund returned nothing.
REFUND_STATUS = {"closed": "succeeded", "pending": "pending", "reversed": "failed", "failed": "failed"}


class OmiseProvider(ProviderAdapter):
    slug = "omise"
    display_name = "Omise"
    verification_method = "Omise-Signature (HMAC-SHA256 of timestamp and body, 5 min window); confirmed by the charges API"
    api_base_url_setting = "OMISE_API_BASE_URL"
    test_key_marker = "skey_test_"
    signature_header = "Omise-Signature"
    timestamp_header = "Omise-Signature-Timestamp"
    # The signing scheme is unconfirmed: charges and refunds are re-fetched (see the module
    # docstring).
    needs_confirmation = True

    def verify_signature(self, *, body: bytes, headers: Mapping[str, str], account, query) -> None:
        header = headers.get(self.signature_header, "")
        timestamp = headers.get(self.timestamp_header, "")
        if not header or not timestamp:
            raise SignatureMissing(f"Missing {self.signature_header} or {self.timestamp_header} header")
        # Unix seconds: ten digits until 2286. int() of thousands of digits is refused by Python.
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            raise SignatureInvalid(f"{self.timestamp_header} is not a Unix timestamp")
        message = timestamp.encode() + b"." + body
        provided = [candidate.strip().lower().encode("ascii", "replace") for candidate in header.split(",")]
        matched = False
        for secret in account.webhook_secrets():
            expected = hmac.new(signing_key(secret), message, hashlib.sha256).hexdigest().encode()
            for candidate in provided:
                matched |= hmac.compare_digest(expected, candidate)
        if not matched:
            raise SignatureInvalid(f"{self.signature_header} does not match the body")
        if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
            raise SignatureInvalid(f"{self.timestamp_header} is more than {TOLERANCE_SECONDS} seconds away")

    def parse(self, *, payload: dict[str, Any], headers: Mapping[str, str], account) -> NormalizedEvent:
        envelope = self.validate(_Envelope, payload)
        kind = envelope.key
        live_expected = not account.test_mode
        other_mode = f"a {'live' if account.test_mode else 'test'}-mode event on a {'test' if account.test_mode else 'live'} account"
        if kind.startswith("charge.") and envelope.data.get("object", "charge") == "charge":
            event = self.validate(ChargeEvent, payload, event_type=kind)
            charge = event.data
            status = CHARGE_STATUS.get(charge.charge_status)
            if status is None:
                raise PayloadInvalid(
                    [{"field": "data.status", "message": f"unknown charge status {charge.charge_status!r}"}], event_type=kind
                )
            livemode = charge.livemode if charge.livemode is not None else event.livemode
            same_mode = livemode is None or livemode == live_expected
            return NormalizedEvent(
                event_id=event.id,
                event_type=kind,
                # A test-mode event never moves money on a live account (and vice versa).
                status=status if same_mode else None,
                ignored_reason="" if same_mode else other_mode,
                external_txn_id=charge.id,
                amount_minor=charge.amount,
                currency=charge.currency,
                reference=metadata_text(charge.metadata, "reference"),
                checkout_id=charge.id,
                provider_student_id=metadata_text(charge.metadata, "student_id"),
                requires_confirmation=self.needs_confirmation,
                raw=payload,
            )
        if kind == "refund.create":
            event = self.validate(RefundEvent, payload, event_type=kind)
            refund = event.data
            livemode = refund.livemode if refund.livemode is not None else event.livemode
            same_mode = livemode is None or livemode == live_expected
            return NormalizedEvent(
                event_id=event.id,
                event_type=kind,
                status=None,
                external_txn_id=refund.charge,
                currency=refund.currency,
                # A claim only: the charge's refunded total is taken from the API on confirmation.
                refunds=(RefundReport(key=refund.id, amount_minor=refund.amount),) if same_mode else (),
                requires_confirmation=self.needs_confirmation,
                ignored_reason="" if same_mode else other_mode,
                raw=payload,
            )
        if kind.startswith("dispute."):
            event = self.validate(DisputeEvent, payload, event_type=kind)
            dispute = event.data
            state = DISPUTE_STATUS.get(dispute.status)
            if state is None:
                raise PayloadInvalid(
                    [{"field": "data.status", "message": f"unknown dispute status {dispute.status!r}"}], event_type=kind
                )
            livemode = dispute.livemode if dispute.livemode is not None else event.livemode
            same_mode = livemode is None or livemode == live_expected
            # The signature covers the body, and the charges API does not report disputes: the
            # dispute is taken from the signed event itself.
            return NormalizedEvent(
                event_id=event.id,
                event_type=kind,
                status=None,
                external_txn_id=dispute.charge,
                currency=dispute.currency,
                disputes=(DisputeReport(key=dispute.id, amount_minor=dispute.amount, status=state),) if same_mode else (),
                ignored_reason="" if same_mode else other_mode,
                raw=payload,
            )
        return NormalizedEvent(event_id=envelope.id, event_type=kind, status=None, raw=payload)

    # --- Payment API (https://docs.omise.co/charges-api) --------------------------------------

    def _auth(self, account) -> tuple[str, str]:
        # HTTP Basic with the secret key as the user name and no password.
        return (self.secret_api_key(account), "")

    def create_checkout(self, *, payment, return_urls) -> CheckoutResult:
        """Create a charge with a redirect source (``credentials["source_type"]``, PromptPay by
        default) and send the payer to its ``authorize_uri``."""
        try:
            from_omise_amount(payment.amount_minor, payment.currency)
        except MoneyError as exc:
            raise ProviderRejected(str(exc)) from exc
        source_type = (payment.account.credentials or {}).get("source_type") or "promptpay"
        form = {
            "amount": str(payment.amount_minor),
            "currency": payment.currency.lower(),
            "return_uri": return_urls.success_url,
            "source[type]": source_type,
            "description": f"{payment.school.name} fees {payment.reference or ''}".strip()[:255],
            "metadata[reference]": payment.reference or "",
            "metadata[payment_id]": str(payment.pk),
        }
        if payment.provider_student_id:
            form["metadata[student_id]"] = payment.provider_student_id
        with self.http_client() as client:
            charge = self.request_json(
                client, "POST", f"{self.api_base_url()}/charges", data=form, auth=self._auth(payment.account)
            )
        if charge.get("object") != "charge" or not charge.get("id"):
            raise ProviderRejected(f"Omise did not create a charge: {charge.get('message', 'no message')}")
        if not charge.get("authorize_uri"):
            raise ProviderRejected("Omise returned no page to send the payer to (authorize_uri)")
        return CheckoutResult(
            redirect_url=charge["authorize_uri"],
            checkout_id=charge["id"],
            external_txn_id=charge["id"],
            provider_data={"omise_source_type": source_type},
        )

    def fetch_status(self, *, payment) -> NormalizedStatus:
        charge_id = payment.external_txn_id or payment.provider_checkout_id
        if not charge_id:
            raise ProviderRejected("The payment has no Omise charge id")
        with self.http_client() as client:
            charge = self.request_json(
                client, "GET", f"{self.api_base_url()}/charges/{charge_id}", auth=self._auth(payment.account)
            )
        try:
            parsed = OmiseCharge.model_validate(charge)
        except pydantic.ValidationError as exc:
            raise ProviderRejected(f"Omise answered a charge we cannot read: {field_errors(exc)[:3]}") from exc
        status = CHARGE_STATUS.get(parsed.charge_status)
        if status is None:
            raise ProviderRejected(f"Omise reported an unknown status {parsed.charge_status!r}")
        if parsed.livemode is not None and parsed.livemode != (not payment.account.test_mode):
            raise ProviderRejected("Omise's answer is for the other mode (test/live)")
        # The refunded total: ``refunded_amount`` since API 2015-11-05, before that ``refunded``
        # (an integer then, a boolean since).
        total = charge.get("refunded_amount", charge.get("refunded"))
        if isinstance(total, bool) or total is None:
            total = 0
        try:
            refunded = from_omise_amount(total, parsed.currency)
        except MoneyError as exc:
            raise ProviderRejected(f"Omise reported a refunded amount we cannot take exactly: {total!r}") from exc
        return NormalizedStatus(
            status=status,
            external_txn_id=parsed.id,
            amount_minor=parsed.amount,
            currency=parsed.currency,
            refunded_total_minor=refunded or None,
            refunds=tuple(self._refunds(charge.get("refunds"), parsed.currency)),
            detail=str(charge.get("failure_message") or parsed.charge_status)[:200],
        )

    @staticmethod
    def _refunds(refunds: Any, currency: str):
        """The charge's refunds one by one, when the API lists them (``refunds.data``)."""
        data = refunds.get("data") if isinstance(refunds, dict) else None
        for item in data if isinstance(data, list) else []:
            try:
                refund = OmiseRefund.model_validate({"currency": currency.lower(), **item})
            except (pydantic.ValidationError, TypeError):
                continue
            yield RefundReport(key=refund.id, amount_minor=refund.amount, status=refund.refund_status)

    def refund(self, *, payment, amount_minor: int, idempotency_key: str, reason: str = "") -> RefundResult:
        """``POST /charges/<id>/refunds`` (https://docs.omise.co/refunds-api): the amount in the
        smallest unit; a full refund before settlement becomes a void. Omise's own pages do not
        document an idempotency key for it (only an unofficial mirror does), so a lost answer is
        never sent again by itself; the ``Idempotency-Key`` header is sent anyway, harmless where
        ignored."""
        charge_id = payment.external_txn_id or payment.provider_checkout_id
        if not charge_id:
            raise ProviderRejected("The payment has no Omise charge id to refund")
        try:
            from_omise_amount(amount_minor, payment.currency)
        except MoneyError as exc:
            raise ProviderRejected(str(exc)) from exc
        form = {"amount": str(amount_minor), "metadata[refund_request]": idempotency_key}
        if reason:
            form["metadata[reason]"] = reason[:500]
        with self.http_client() as client:
            refund = self.request_json(
                client,
                "POST",
                f"{self.api_base_url()}/charges/{charge_id}/refunds",
                data=form,
                auth=self._auth(payment.account),
                headers={"Idempotency-Key": idempotency_key},
            )
        return self._refund_result(refund, payment.currency)

    def refund_status(self, *, payment, refund_id: str) -> RefundResult:
        """``GET /charges/<id>/refunds/<refund id>``."""
        charge_id = payment.external_txn_id or payment.provider_checkout_id
        with self.http_client() as client:
            refund = self.request_json(
                client, "GET", f"{self.api_base_url()}/charges/{charge_id}/refunds/{refund_id}", auth=self._auth(payment.account)
            )
        return self._refund_result(refund, payment.currency)

    @staticmethod
    def _refund_result(refund: Mapping[str, Any], currency: str) -> RefundResult:
        if refund.get("object") != "refund" or not refund.get("id"):
            raise ProviderRejected(f"Omise did not answer a refund: {refund.get('message', 'no message')}")
        answered = str(refund.get("currency") or currency).upper()
        if answered != currency:
            raise ProviderRejected(f"Omise refunded in {answered}, the payment is in {currency}")
        try:
            amount = from_omise_amount(refund.get("amount"), currency)
        except MoneyError as exc:
            raise ProviderRejected(f"Omise answered a refund amount we cannot take exactly: {refund.get('amount')!r}") from exc
        # A refund object without a status is of an API version before refunds had one: it was
        # made at once. A void never took the money, which for the books is the same as a refund.
        raw_status = str(refund.get("status") or "closed")
        status = "succeeded" if refund.get("voided") else OMISE_REFUND_STATUS.get(raw_status, "pending")
        return RefundResult(refund_id=str(refund["id"]), status=status, amount_minor=amount, detail=raw_status)
