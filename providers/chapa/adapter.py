"""Chapa (Ethiopia): hosted checkout, webhooks signed with the dashboard's secret hash.

Webhook (https://developer.chapa.co/integrations/webhooks): two headers arrive.
``x-chapa-signature`` is the hex HMAC-SHA256 of the payload keyed with the secret; we verify it
over the raw body bytes (as Chapa's own Node SDK does). ``chapa-signature`` is the HMAC of the
secret *itself*: a constant that does not depend on the body, so anyone who saw it once could
sign any body with it. We never accept it, even though Chapa's docs say either header suffices:
a delivery without ``x-chapa-signature`` is refused.

Which secret: the dashboard asks for a "secret hash", the docs' example says "secret key";
most likely the webhook secret hash (unconfirmed). The account's ``webhook_secret`` holds it.

Chapa's docs tell merchants to always re-query the verify endpoint before giving value, and which
bytes Chapa signs (raw body or a re-serialisation) is unconfirmed, so payment events carry
``requires_confirmation``: the worker asks ``/v1/transaction/verify/<tx_ref>`` and takes its
answer. Refund events are applied from the signed body: the verify endpoint does not report
refunds, and a refund never credits money to anyone.

Payloads are flat (no ``data`` wrapper) and have no event id: ours is ``<event>:<tx_ref>``, and
for a refund ``<event>:<tx_ref>:<updated_at>`` so that two partial refunds are two events.
Amounts are decimal strings in major units (``"4500.00"``), parsed strictly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from core.money import MoneyError, from_minor
from core.status import PaymentStatus
from providers.base import (
    CheckoutResult,
    HmacHeaderAdapter,
    NormalizedEvent,
    NormalizedStatus,
    RefundReport,
    RefundResult,
)
from providers.common import CurrencyCode, Identifier, NonEmpty, major_units, metadata_text, minor_or_error
from providers.errors import ProviderRejected

S = PaymentStatus

# "charge.failed/cancelled" is one event name, slash included.
CHARGE_EVENTS = {"charge.success": S.SUCCEEDED, "charge.failed/cancelled": S.FAILED}
REFUND_EVENTS = {"charge.refunded", "charge.reversed"}
VERIFY_STATUS = {"success": S.SUCCEEDED, "failed": S.FAILED, "cancelled": S.CANCELLED, "pending": S.PENDING}


class ChapaWebhook(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event: NonEmpty
    tx_ref: Identifier
    currency: CurrencyCode
    amount: Any
    status: str = ""
    mode: str = "live"
    reference: str | None = None
    type: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    mobile: str | None = None
    updated_at: str | None = None
    meta: dict[str, Any] | None = None

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: Any, info: ValidationInfo) -> int:
        minor = minor_or_error(major_units, value, info.data.get("currency"))
        if info.data.get("currency") and minor <= 0:
            raise ValueError("amount must be greater than zero")
        return minor


class ChapaProvider(HmacHeaderAdapter):
    slug = "chapa"
    display_name = "Chapa"
    verification_method = "x-chapa-signature (HMAC-SHA256 of the body); confirmed by the verify API"
    api_base_url_setting = "CHAPA_API_BASE_URL"
    test_key_marker = "_TEST-"  # CHASECK_TEST-...
    refund_events_name_the_refund = False  # charge.refunded carries no refund id
    # Hex HMAC-SHA256 of the body. Without it a delivery is refused: chapa-signature alone proves
    # nothing about the body (see the module docstring).
    signature_header = "x-chapa-signature"
    # The HMAC of the secret itself: a constant that passes anywhere chapa-signature is accepted.
    secret_headers = frozenset({"chapa-signature"})
    # Chapa says to re-query its verify endpoint before giving value (see the module docstring).
    needs_confirmation = True

    def parse(self, *, payload: dict[str, Any], headers: Mapping[str, str], account) -> NormalizedEvent:
        event_type = payload.get("event") if isinstance(payload.get("event"), str) else ""
        if payload.get("type") == "Payout" or event_type.startswith("payout."):
            # A payout (https://developer.chapa.co/integrations/webhooks): money out to a bank or
            # wallet, identified by our ``reference``; it has no tx_ref and is not a payment.
            reference = payload.get("reference") if isinstance(payload.get("reference"), str) else ""
            key = reference or payload.get("chapa_reference") or ""
            return NormalizedEvent(
                event_id=f"{event_type or 'payout'}:{key}"[:255],
                event_type=event_type or "payout",
                status=None,
                ignored_reason="payouts are money paid out, not a payment",
                raw=payload,
            )
        hook = self.validate(ChapaWebhook, payload, event_type=event_type)
        kind = hook.event
        same_mode = hook.mode == ("test" if account.test_mode else "live")
        other_mode = f"a {hook.mode}-mode event on a {'test' if account.test_mode else 'live'} account"
        payer = {
            "name": " ".join(part for part in (hook.first_name, hook.last_name) if part),
            "email": hook.email or "",
            "phone": hook.mobile or "",
        }
        common = dict(
            event_type=kind,
            external_txn_id=hook.reference or "",
            amount_minor=hook.amount,
            currency=hook.currency,
            reference=hook.tx_ref,
            provider_student_id=metadata_text(hook.meta, "student_id"),
            payer={k: v for k, v in payer.items() if v},
            raw=payload,
        )
        if kind in CHARGE_EVENTS:
            return NormalizedEvent(
                event_id=f"{kind}:{hook.tx_ref}",
                # A test-mode event never moves money on a live account (and vice versa).
                status=CHARGE_EVENTS[kind] if same_mode else None,
                ignored_reason="" if same_mode else other_mode,
                requires_confirmation=self.needs_confirmation,
                **common,
            )
        if kind in REFUND_EVENTS:
            # Whether a partial refund's "amount" is the refund or the charge is unconfirmed; we
            # read it as this refund's amount (for a full refund both readings agree), and the
            # refund rules never let the total exceed what was paid.
            return NormalizedEvent(
                event_id=f"{kind}:{hook.tx_ref}:{hook.updated_at or hook.amount}"[:255],
                status=None,
                # No refund id: the event keys it.
                refunds=(RefundReport(key="", amount_minor=hook.amount),) if same_mode else (),
                ignored_reason="" if same_mode else other_mode,
                **{**common, "amount_minor": 0},
            )
        return NormalizedEvent(event_id=f"{kind}:{hook.tx_ref}"[:255], status=None, **{**common, "amount_minor": 0})

    # --- Payment API (https://developer.chapa.co/docs/accept-payments ; verify-payments) -------

    def _headers(self, account) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret_api_key(account)}", "Accept": "application/json"}

    def create_checkout(self, *, payment, return_urls) -> CheckoutResult:
        if not payment.reference:
            raise ProviderRejected("The payment has no reference to give Chapa as tx_ref")
        payer = payment.payer or {}
        first, _, last = str(payer.get("name", "")).partition(" ")
        body = {
            "amount": str(from_minor(payment.amount_minor, payment.currency)),
            "currency": payment.currency,
            "tx_ref": payment.reference,
            # Chapa's callback_url is a GET to the merchant, not its webhook: the webhook URL is
            # set in Chapa's dashboard. The payer comes back to our thanks page.
            "return_url": return_urls.success_url,
            "customization": {
                # Chapa allows letters, digits, spaces, '-', '_' and '.' here.
                "title": "School fees",
                "description": re.sub(r"[^A-Za-z0-9 ._-]", "", f"Fees {payment.school.name} {payment.reference}")[:50],
            },
            "meta": {"payment_id": str(payment.pk), "student_id": payment.provider_student_id or ""},
        }
        for key, value in (("email", payer.get("email")), ("first_name", first), ("last_name", last), ("phone_number", payer.get("phone"))):
            if value:
                body[key] = value
        with self.http_client() as client:
            data = self.request_json(
                client,
                "POST",
                f"{self.api_base_url()}/v1/transaction/initialize",
                json=body,
                headers=self._headers(payment.account),
            )
        checkout_url = (data.get("data") or {}).get("checkout_url")
        if data.get("status") != "success" or not checkout_url:
            raise ProviderRejected(f"Chapa did not start the checkout: {data.get('message', 'no message')}")
        return CheckoutResult(redirect_url=checkout_url)

    def fetch_status(self, *, payment) -> NormalizedStatus:
        # Ours for a checkout we started; the tx_ref of a payment made elsewhere otherwise.
        reference = payment.reference or payment.provider_reference
        if not reference:
            raise ProviderRejected("The payment has no reference to look up at Chapa")
        url = f"{self.api_base_url()}/v1/transaction/verify/{quote(reference, safe='')}"
        with self.http_client() as client:
            data = self.request_json(client, "GET", url, headers=self._headers(payment.account))
        txn = data.get("data") or {}
        if txn.get("tx_ref") != reference:
            raise ProviderRejected("Chapa's verify answer is for another transaction")
        status = VERIFY_STATUS.get(str(txn.get("status", "")).lower())
        if status is None:
            raise ProviderRejected(f"Chapa reported an unknown status {txn.get('status')!r}")
        if str(txn.get("mode", "live")) != ("test" if payment.account.test_mode else "live"):
            raise ProviderRejected("Chapa's verify answer is for the other mode (test/live)")
        currency = str(txn.get("currency", "")).upper()
        try:
            amount = major_units(txn.get("amount"), currency)
        except MoneyError as exc:
            raise ProviderRejected(f"Chapa reported an amount we cannot take exactly: {txn.get('amount')!r}") from exc
        return NormalizedStatus(
            status=status,
            external_txn_id=str(txn.get("reference") or ""),
            amount_minor=amount,
            currency=currency,
            detail=str(data.get("message", ""))[:200],
        )

    def refund(self, *, payment, amount_minor: int, idempotency_key: str, reason: str = "") -> RefundResult:
        """``POST /v1/refund/<reference>`` (https://developer.chapa.co/refund), form-encoded as in
        Chapa's example: the amount as a decimal string in major units, and ``reference``, which
        Chapa requires to be unique per business: our idempotency key, and the refund's key in
        the ledger (Chapa's answer and webhooks name no refund id of their own). Which id the
        path takes is unconfirmed: Chapa's text says tx_ref, its example shows Chapa's own
        reference; we send Chapa's reference when we know it. What Chapa does with a reference
        sent twice is unconfirmed too, so a lost answer is never sent again by itself."""
        transaction = payment.external_txn_id or payment.reference
        if not transaction:
            raise ProviderRejected("The payment has no Chapa reference to refund")
        form = {"amount": str(from_minor(amount_minor, payment.currency)), "reference": idempotency_key}
        if reason:
            form["reason"] = reason[:500]
        with self.http_client() as client:
            data = self.request_json(
                client,
                "POST",
                f"{self.api_base_url()}/v1/refund/{quote(transaction, safe='')}",
                data=form,
                headers=self._headers(payment.account),
            )
        if data.get("status") != "success":
            raise ProviderRejected(f"Chapa did not make the refund: {data.get('message', 'no message')}")
        refund = data.get("data") if isinstance(data.get("data"), dict) else {}
        state = str(refund.get("status", "")).lower()
        return RefundResult(
            refund_id=idempotency_key,
            status="failed" if state == "failed" else "pending",
            amount_minor=amount_minor,
            detail=str(data.get("message", ""))[:200],
        )
