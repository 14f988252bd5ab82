"""Flutterwave (v3 and v4 webhooks): Standard hosted checkout; webhooks carry the secret hash.

Webhook (https://developer.flutterwave.com/docs/webhooks ; Flutterwave's own WooCommerce plugin):
the ``verif-hash`` header is the secret hash set in the dashboard, compared for equality (in
constant time) with the account's ``webhook_secret``. There is no HMAC over the body and no
timestamp: the header proves the sender knows the secret but binds nothing, so anyone holding
one delivery's header could send any body. Every event therefore carries
``requires_confirmation``: the worker asks ``GET /v3/transactions/<id>/verify`` (and the refunds
of that transaction) and only the API's answer moves the payment. v4 accounts send
``flutterwave-signature`` instead: the secret hash, or base64 HMAC-SHA256 of the body keyed with
it (sources disagree, so both are accepted), and their events are confirmed the same way.

Shapes accepted (all are seen in the wild):
- v3 envelope ``{"event": "charge.completed", "data": {id, tx_ref, flw_ref, amount, currency,
  status, customer}}`` - sent for success *and* failure; the outcome is ``data.status``;
- the older flat ``{"id", "txRef", "flwRef", "amount", "currency", "status", "event.type"}``;
- the refund notification (off unless support enables it): flat PascalCase ``TransactionId``,
  ``AmountRefunded``, ``FlwRef``, ``status``;
- v4 ``{"webhook_id" | "id", "timestamp", "type", "data"}`` with ``chg_`` charges (``reference``
  is the merchant's) and ``refund.*`` events (``charge_id``); ``transfer.*`` is a payout.

No event id: ours is ``charge:<transaction id>:<status>`` (a redelivery is a duplicate; the later
"successful" of a transaction first reported "pending" is a new event) and
``refund:<transaction id>:<refund ref>``. Amounts are major units (``25000`` = NGN 25,000.00);
cumulative refunds come from the API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictInt, ValidationInfo, field_validator

from core.money import MoneyError, from_minor
from core.status import PaymentStatus
from providers.base import (
    CheckoutResult,
    NormalizedEvent,
    NormalizedStatus,
    ProviderAdapter,
    RefundReport,
    RefundResult,
)
from providers.common import CurrencyCode, Identifier, major_units, metadata_text, minor_or_error
from providers.errors import PayloadInvalid, ProviderRejected, SignatureInvalid, SignatureMissing

S = PaymentStatus

# v2/v3 say "successful", v4 "succeeded".
CHARGE_STATUS = {
    "successful": S.SUCCEEDED, "succeeded": S.SUCCEEDED, "failed": S.FAILED, "pending": S.PENDING,
    "cancelled": S.CANCELLED,
}  # fmt: skip
REFUND_STATUS = {"completed": "succeeded", "failed": "failed"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Customer(_Model):
    email: str | None = None
    name: str | None = Field(default=None, validation_alias=AliasChoices("name", "fullName"))
    phone_number: str | None = Field(default=None, validation_alias=AliasChoices("phone_number", "phone"))


class Charge(_Model):
    """A charge, from either the v3 envelope's ``data`` or the flat camelCase payload."""

    id: StrictInt
    tx_ref: Identifier = Field(validation_alias=AliasChoices("tx_ref", "txRef"))
    flw_ref: str | None = Field(default=None, validation_alias=AliasChoices("flw_ref", "flwRef"))
    currency: CurrencyCode
    amount: Any
    status: str
    customer: Customer | None = None
    meta: Any = None

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: Any, info: ValidationInfo) -> int:
        return minor_or_error(major_units, value, info.data.get("currency"))


class ChargeV4(_Model):
    """A v4 charge (``chg_...``): the merchant reference is ``reference``; the customer's name
    and phone are objects, and nothing of the customer is read here."""

    id: Identifier
    reference: Identifier
    currency: CurrencyCode
    amount: Any
    status: str
    meta: Any = None

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: Any, info: ValidationInfo) -> int:
        return minor_or_error(major_units, value, info.data.get("currency"))


class RefundV4(_Model):
    id: Identifier
    charge_id: Identifier
    amount_refunded: Any
    status: str = ""


class EnvelopeV4(_Model):
    """v4: ``{"webhook_id" | "id", "timestamp", "type", "data"}``."""

    webhook_id: Identifier | None = Field(default=None, validation_alias=AliasChoices("webhook_id", "id"))
    type: Identifier
    data: dict[str, Any]


class ChargeEnvelope(_Model):
    event: str
    data: Charge


class RefundNotice(_Model):
    TransactionId: StrictInt
    FlwRef: Identifier
    AmountRefunded: Any
    status: str = ""
    currency: str | None = None


class FlutterwaveProvider(ProviderAdapter):
    slug = "flutterwave"
    display_name = "Flutterwave"
    verification_method = (
        "verif-hash (v3) or flutterwave-signature (v4) equals the secret hash or is its HMAC of the body; "
        "confirmed by the verify API"
    )
    api_base_url_setting = "FLUTTERWAVE_API_BASE_URL"
    test_key_marker = "_TEST-"  # FLWSECK_TEST-...
    checkout_requires_email = True  # Standard checkout: customer.email is required
    # The header binds nothing to the body: every event is confirmed (see the module docstring).
    needs_confirmation = True
    signature_header = "verif-hash"
    v4_signature_header = "flutterwave-signature"
    # The secret hash itself (v3, and v4 as its webhooks page shows it): never stored.
    secret_headers = frozenset({"verif-hash", "flutterwave-signature"})

    def verify_signature(self, *, body: bytes, headers: Mapping[str, str], account, query) -> None:
        """v3 sends the secret hash in ``verif-hash``. v4 sends ``flutterwave-signature``, which its
        webhooks page describes as the secret hash and other sources as base64(HMAC-SHA256(secret
        hash, raw body)) (unconfirmed which): either is accepted, compared in constant time.
        Neither is trusted for money: every event is confirmed through the verify API."""
        name = self.signature_header if self.signature_header in headers else self.v4_signature_header
        provided = headers.get(name, "")
        if not provided:
            raise SignatureMissing(f"Missing {self.signature_header} (v3) or {self.v4_signature_header} (v4) header")
        given = provided.encode("utf-8", "replace")
        matched = False
        for secret in account.webhook_secrets():
            matched |= hmac.compare_digest(secret.encode(), given)
            if name == self.v4_signature_header:
                digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
                matched |= hmac.compare_digest(digest, given)
        if not matched:
            raise SignatureInvalid(f"{name} does not match the secret hash")

    def parse(self, *, payload: dict[str, Any], headers: Mapping[str, str], account) -> NormalizedEvent:
        if "type" in payload and ("webhook_id" in payload or "id" in payload) and isinstance(payload.get("data"), dict):
            return self._parse_v4(payload)
        kind = str(payload.get("event") or payload.get("event.type") or "")
        if kind.lower().startswith("transfer") or payload.get("event.type") == "Transfer":
            return self._ignored(payload, kind or "transfer")
        if "TransactionId" in payload or "AmountRefunded" in payload:
            refund = self.validate(RefundNotice, payload, event_type="refund")
            return NormalizedEvent(
                event_id=f"refund:{refund.TransactionId}:{refund.FlwRef}",
                event_type="refund",
                status=None,
                external_txn_id=str(refund.TransactionId),
                # A claim only: the refunds are taken from the API on confirmation.
                refunds=(RefundReport(key=refund.FlwRef, amount_minor=0),),
                requires_confirmation=self.needs_confirmation,
                raw=payload,
            )
        if "data" in payload:
            event_type = str(payload.get("event") or "charge.completed")
            charge = self.validate(ChargeEnvelope, payload, event_type=event_type).data
            prefix = "data."
        else:
            event_type = str(payload.get("event.type") or "charge.completed")
            charge = self.validate(Charge, payload, event_type=event_type)
            prefix = ""
        status = CHARGE_STATUS.get(charge.status.lower())
        if status is None:
            self._invalid(f"{prefix}status", f"unknown charge status {charge.status!r}", event_type)
        customer = charge.customer.model_dump(exclude_none=True) if charge.customer else {}
        meta = charge.meta or (payload.get("meta_data") if isinstance(payload.get("meta_data"), dict) else None)
        return NormalizedEvent(
            event_id=f"charge:{charge.id}:{charge.status.lower()}",
            event_type=event_type,
            status=status,
            external_txn_id=str(charge.id),
            amount_minor=charge.amount,
            currency=charge.currency,
            reference=charge.tx_ref,
            provider_student_id=metadata_text(meta, "student_id"),
            payer={k: v for k, v in customer.items() if v},
            requires_confirmation=self.needs_confirmation,
            raw=payload,
        )

    def _parse_v4(self, payload: dict[str, Any]) -> NormalizedEvent:
        envelope = self.validate(EnvelopeV4, payload)
        kind = envelope.type
        if kind.startswith("charge."):
            charge = self.validate(ChargeV4, envelope.data, event_type=kind)
            status = CHARGE_STATUS.get(charge.status.lower())
            if status is None:
                self._invalid("data.status", f"unknown charge status {charge.status!r}", kind)
            return NormalizedEvent(
                event_id=f"charge:{charge.id}:{charge.status.lower()}",
                event_type=kind,
                status=status,
                external_txn_id=charge.id,
                amount_minor=charge.amount,
                currency=charge.currency,
                reference=charge.reference,
                provider_student_id=metadata_text(charge.meta, "student_id"),
                requires_confirmation=self.needs_confirmation,
                raw=payload,
            )
        if kind.startswith("refund."):
            refund = self.validate(RefundV4, envelope.data, event_type=kind)
            return NormalizedEvent(
                event_id=f"refund:{refund.charge_id}:{refund.id}:{refund.status.lower()}"[:255],
                event_type=kind,
                status=None,
                external_txn_id=refund.charge_id,
                # A claim only (and in no currency): the refunds are taken from the API.
                refunds=(RefundReport(key=refund.id, amount_minor=0),),
                requires_confirmation=self.needs_confirmation,
                raw=payload,
            )
        return self._ignored(payload, kind)

    @staticmethod
    def _ignored(payload: dict[str, Any], kind: str) -> NormalizedEvent:
        """A genuine notification that is not about a payment (transfers are payouts)."""
        data = payload.get("data") if isinstance(payload.get("data"), dict) else payload
        key = data.get("id") or data.get("reference") or hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()[:32]
        return NormalizedEvent(
            event_id=f"{kind}:{key}"[:255],
            event_type=kind,
            status=None,
            ignored_reason=f"{kind} is a payout or transfer, not a payment",
            raw=payload,
        )

    @staticmethod
    def _invalid(field: str, message: str, event_type: str):
        raise PayloadInvalid([{"field": field, "message": message}], event_type=event_type)

    # --- Payment API (https://developer.flutterwave.com/docs/collecting-payments/standard) ----

    def _headers(self, account) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret_api_key(account)}", "Accept": "application/json"}

    def create_checkout(self, *, payment, return_urls) -> CheckoutResult:
        payer = payment.payer or {}
        if not payer.get("email"):
            raise ProviderRejected("Flutterwave needs the payer's email address to start a checkout")
        if not payment.reference:
            raise ProviderRejected("The payment has no reference to give Flutterwave as tx_ref")
        customer = {"email": payer["email"]}
        if payer.get("name"):
            customer["name"] = payer["name"]
        if payer.get("phone"):
            customer["phonenumber"] = payer["phone"]
        body = {
            "tx_ref": payment.reference,
            # Major units as a string: exact, never a float.
            "amount": str(from_minor(payment.amount_minor, payment.currency)),
            # Flutterwave assumes NGN when the currency is omitted: always send it.
            "currency": payment.currency,
            "redirect_url": return_urls.success_url,
            "customer": customer,
            "customizations": {"title": f"{payment.school.name} fees"[:100]},
            "meta": {"payment_id": str(payment.pk), "student_id": payment.provider_student_id or ""},
        }
        with self.http_client() as client:
            data = self.request_json(
                client, "POST", f"{self.api_base_url()}/v3/payments", json=body, headers=self._headers(payment.account)
            )
        link = (data.get("data") or {}).get("link")
        if data.get("status") != "success" or not link:
            raise ProviderRejected(f"Flutterwave did not start the checkout: {data.get('message', 'no message')}")
        return CheckoutResult(redirect_url=link)

    def fetch_status(self, *, payment) -> NormalizedStatus:
        """Verify the transaction (by its id once known, else by our tx_ref) and, when it was
        paid, add up its completed refunds."""
        account = payment.account
        base = self.api_base_url()
        reference = payment.reference or payment.provider_reference
        # A v4 charge id ("chg_...") is not a v3 transaction id: such a charge is verified by its
        # merchant reference.
        by_id = payment.external_txn_id and str(payment.external_txn_id).isdigit()
        with self.http_client() as client:
            if by_id:
                data = self.request_json(
                    client, "GET", f"{base}/v3/transactions/{payment.external_txn_id}/verify", headers=self._headers(account)
                )
            elif reference:
                data = self.request_json(
                    client,
                    "GET",
                    f"{base}/v3/transactions/verify_by_reference",
                    params={"tx_ref": reference},
                    headers=self._headers(account),
                )
            else:
                raise ProviderRejected("The payment has neither a Flutterwave id nor a reference")
            txn = data.get("data") or {}
            if reference and txn.get("tx_ref") != reference:
                raise ProviderRejected("Flutterwave's verify answer is for another transaction")
            status = CHARGE_STATUS.get(str(txn.get("status", "")).lower())
            if status is None:
                raise ProviderRejected(f"Flutterwave reported an unknown status {txn.get('status')!r}")
            currency = str(txn.get("currency", "")).upper()
            try:
                amount = major_units(txn.get("amount"), currency)
            except MoneyError as exc:
                raise ProviderRejected(f"Flutterwave reported an amount we cannot take exactly: {txn.get('amount')!r}") from exc
            refunds: tuple[RefundReport, ...] = ()
            if status == S.SUCCEEDED:
                refunds = self._refunds(client, account, txn.get("id"), currency)
        return NormalizedStatus(
            status=status,
            external_txn_id=str(txn.get("id", "")),
            amount_minor=amount,
            currency=currency,
            refunds=refunds,
            detail=str(txn.get("processor_response") or txn.get("status"))[:200],
        )

    def _refunds(self, client, account, transaction_id, currency: str) -> tuple[RefundReport, ...]:
        # GET /v3/refunds lists refunds; filtering by the transaction's id (``id``) and the
        # ``tx_id`` field of each refund follow Flutterwave's v3 reference (the filter name is
        # unconfirmed, so the answer is filtered again here). Each refund is keyed by its id.
        data = self.request_json(
            client, "GET", f"{self.api_base_url()}/v3/refunds", params={"id": transaction_id}, headers=self._headers(account)
        )
        refunds = []
        for refund in data.get("data") or []:
            if str(refund.get("tx_id")) != str(transaction_id):
                continue
            state = REFUND_STATUS.get(str(refund.get("status")).lower(), "pending")
            try:
                amount = major_units(refund.get("amount_refunded"), currency)
            except MoneyError as exc:
                raise ProviderRejected(f"Flutterwave reported a refund we cannot take exactly: {refund!r}"[:300]) from exc
            refunds.append(RefundReport(key=str(refund.get("id")), amount_minor=amount, status=state))
        return tuple(refunds)

    def refund(self, *, payment, amount_minor: int, idempotency_key: str, reason: str = "") -> RefundResult:
        """``POST /v3/transactions/<id>/refund`` with the amount in major units and our reason as
        ``comments``. v3 documents no idempotency key for refunds (so a lost answer is never
        sent again by itself); the ``X-Idempotency-Key`` header that v4 documents for every POST
        is sent too, which costs nothing where it is ignored."""
        if not payment.external_txn_id:
            raise ProviderRejected("The payment has no Flutterwave transaction id to refund")
        body = {"amount": str(from_minor(amount_minor, payment.currency))}
        if reason:
            body["comments"] = reason[:500]
        with self.http_client() as client:
            data = self.request_json(
                client,
                "POST",
                f"{self.api_base_url()}/v3/transactions/{payment.external_txn_id}/refund",
                json=body,
                headers={**self._headers(payment.account), "X-Idempotency-Key": idempotency_key},
            )
        refund = data.get("data") or {}
        if data.get("status") != "success" or not refund.get("id"):
            raise ProviderRejected(f"Flutterwave did not create the refund: {data.get('message', 'no message')}")
        return self._refund_result(refund, payment.currency)

    def refund_status(self, *, payment, refund_id: str) -> RefundResult:
        """The refund as ``GET /v3/refunds`` lists it for the payment's transaction."""
        with self.http_client() as client:
            data = self.request_json(
                client,
                "GET",
                f"{self.api_base_url()}/v3/refunds",
                params={"id": payment.external_txn_id},
                headers=self._headers(payment.account),
            )
        for refund in data.get("data") or []:
            if str(refund.get("id")) == refund_id and str(refund.get("tx_id")) == str(payment.external_txn_id):
                return self._refund_result(refund, payment.currency)
        raise ProviderRejected(f"Flutterwave lists no refund {refund_id} for transaction {payment.external_txn_id}")

    @staticmethod
    def _refund_result(refund: Mapping[str, Any], currency: str) -> RefundResult:
        try:
            amount = major_units(refund.get("amount_refunded"), currency)
        except MoneyError as exc:
            raise ProviderRejected(f"Flutterwave answered a refund amount we cannot take exactly: {refund.get('amount_refunded')!r}") from exc
        return RefundResult(
            refund_id=str(refund["id"]),
            status=REFUND_STATUS.get(str(refund.get("status")).lower(), "pending"),
            amount_minor=amount,
            detail=str(refund.get("status", "")),
        )
