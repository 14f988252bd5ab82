"""Stripe: Checkout Sessions, webhooks verified by the official ``stripe`` SDK.

Webhook (https://docs.stripe.com/webhooks): ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]``,
HMAC-SHA256 of ``"<t>." + raw body`` keyed with the endpoint's signing secret (``whsec_...``),
which is the account's ``webhook_secret``. The SDK's ``WebhookSignature.verify_header`` checks
every ``v1`` value in constant time and refuses timestamps older than 300 s; we run it once per
secret we hold (current and, during a rotation, previous).

Events (https://docs.stripe.com/checkout/fulfillment): ``checkout.session.completed`` (paid, or
``unpaid`` for delayed methods), ``checkout.session.async_payment_succeeded`` / ``_failed``,
``checkout.session.expired``, ``payment_intent.succeeded`` / ``payment_intent.payment_failed``,
``charge.refunded`` (``amount_refunded`` is the cumulative total). Anything else is stored and
concerns no payment.

Amounts (https://docs.stripe.com/currencies) are integers in Stripe's unit, which is not always
ISO's: see ``stripe_exponent``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any, Literal

import stripe
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, ValidationInfo, field_validator

from core.money import MoneyError, exponent, scale_units
from core.status import PaymentStatus
from providers.base import (
    CheckoutResult,
    DisputeReport,
    NormalizedEvent,
    NormalizedStatus,
    ProviderAdapter,
    RefundReport,
    RefundResult,
)
from providers.common import CurrencyCode, Identifier, NonEmpty, metadata_text, minor_or_error
from providers.errors import (
    PayloadInvalid,
    ProviderRejected,
    ProviderUnavailable,
    SignatureInvalid,
    SignatureMissing,
)

S = PaymentStatus

# Stripe's zero-decimal currencies: the integer is the whole amount (UGX 5000 -> 5000).
# https://stripe.com/docs/currencies (archived copy, see docs/reference/providers.md 1.5).
# UGX is on this list; whether Stripe adds a two-decimal backwards-compatibility rule for UGX is
# unconfirmed: we follow the published list, and a session's amount that is not what we asked
# for is taken as confirmed by the payment rules, so check UGX in the sandbox before going live.
STRIPE_ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)


def stripe_exponent(currency: str) -> int:
    """Decimal places of Stripe's integer unit for ``currency``.

    Zero-decimal list -> 0 (MGA too, although ISO gives it 2). Three-decimal currencies (BHD,
    JOD, KWD, OMR, TND) -> 3. Everything else -> 2, including ISK, which ISO makes zero-decimal
    but Stripe keeps two-decimal in multiples of 100, and HUF and TWD, whose two decimals are
    only restricted for payouts, not charges.
    """
    if currency in STRIPE_ZERO_DECIMAL:
        return 0
    return 3 if exponent(currency) == 3 else 2


def from_stripe_amount(amount: int, currency: str) -> int:
    """Stripe's integer -> ISO minor units, exactly (ISK 10000 -> 100 krónur; ISK 150 refused)."""
    return scale_units(amount, from_exponent=stripe_exponent(currency), to_exponent=exponent(currency), currency=currency)


def to_stripe_amount(amount_minor: int, currency: str) -> int:
    """ISO minor units -> Stripe's integer. Three-decimal currencies must end in 0 for Stripe."""
    amount = scale_units(
        amount_minor, from_exponent=exponent(currency), to_exponent=stripe_exponent(currency), currency=currency
    )
    if stripe_exponent(currency) == 3 and amount % 10:
        raise MoneyError(f"Stripe charges {currency} in multiples of 10 of its minor unit")
    return amount


def _stripe_amount_field(cls, value: Any, info: ValidationInfo) -> int:
    return minor_or_error(lambda v, c: from_stripe_amount(v, c), value, info.data.get("currency"))


class _StripeObject(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class CustomerDetails(_StripeObject):
    email: str | None = None
    name: str | None = None
    phone: str | None = None


class CheckoutSession(_StripeObject):
    id: Identifier
    currency: CurrencyCode
    amount_total: StrictInt
    payment_status: Literal["paid", "unpaid", "no_payment_required"]
    status: Literal["open", "complete", "expired"] | None = None
    client_reference_id: str | None = None
    metadata: Any = None
    payment_intent: Identifier | None = None
    customer_details: CustomerDetails | None = None

    _amount = field_validator("amount_total")(_stripe_amount_field)


class PaymentIntent(_StripeObject):
    id: Identifier
    currency: CurrencyCode
    amount: StrictInt
    status: str
    metadata: Any = None
    # The charge that took the money: a string id from API 2022-11-15, before that the first of
    # an embedded ``charges`` list.
    latest_charge: Any = None
    charges: Any = None

    _amount = field_validator("amount")(_stripe_amount_field)

    @property
    def charge_id(self) -> str:
        if isinstance(self.latest_charge, str):
            return self.latest_charge
        if isinstance(self.latest_charge, dict) and isinstance(self.latest_charge.get("id"), str):
            return self.latest_charge["id"]
        data = self.charges.get("data") if isinstance(self.charges, dict) else None
        if isinstance(data, list) and data and isinstance(data[0], dict) and isinstance(data[0].get("id"), str):
            return data[0]["id"]
        return ""


class Refund(_StripeObject):
    """A refund object (https://docs.stripe.com/api/refunds/object)."""

    id: Identifier
    currency: CurrencyCode
    amount: StrictInt
    status: str | None = None
    charge: Identifier | None = None
    # Absent before PaymentIntents existed, null for a charge made without one.
    payment_intent: Identifier | None = None

    _amount = field_validator("amount")(_stripe_amount_field)


class Charge(_StripeObject):
    id: Identifier
    currency: CurrencyCode
    amount: StrictInt
    amount_refunded: StrictInt = 0
    # Null for a charge made with the Charges API, absent in API versions before PaymentIntents.
    payment_intent: Identifier | None = None
    status: str | None = None
    refunded: StrictBool = False
    metadata: Any = None
    # The refunds, embedded before API 2022-11-15 (``{"data": [...]}``); read when present.
    refunds: Any = None

    _amount = field_validator("amount", "amount_refunded")(_stripe_amount_field)


class Dispute(_StripeObject):
    """A dispute object (https://docs.stripe.com/api/disputes/object). Disputes of 2013 and
    before have no ``id``: one dispute per charge, so the charge keys it."""

    id: Identifier | None = None
    currency: CurrencyCode
    amount: StrictInt
    status: str
    charge: Identifier
    payment_intent: Identifier | None = None

    _amount = field_validator("amount")(_stripe_amount_field)


class _Envelope(_StripeObject):
    id: NonEmpty
    type: NonEmpty
    livemode: StrictBool
    # When the event happened (Unix seconds): orders cumulative totals such as amount_refunded.
    # Informational, so never a reason to refuse the event: anything else is ignored.
    created: Any = None

    @property
    def occurred_at(self) -> datetime | None:
        if isinstance(self.created, int) and not isinstance(self.created, bool) and 0 < self.created < 2**32:
            return datetime.fromtimestamp(self.created, tz=dt_timezone.utc)
        return None


def _event_of(model: type[_StripeObject]) -> type[_Envelope]:
    data = type(f"_{model.__name__}Data", (_StripeObject,), {"__annotations__": {"object": model}})
    return type(f"{model.__name__}Event", (_Envelope,), {"__annotations__": {"data": data}})


SessionEvent = _event_of(CheckoutSession)
IntentEvent = _event_of(PaymentIntent)
ChargeEvent = _event_of(Charge)
RefundEvent = _event_of(Refund)
DisputeEvent = _event_of(Dispute)

SESSION_EVENTS = {
    "checkout.session.completed": None,  # depends on payment_status
    "checkout.session.async_payment_succeeded": S.SUCCEEDED,
    "checkout.session.async_payment_failed": S.FAILED,
    "checkout.session.expired": S.EXPIRED,
}
INTENT_EVENTS = {"payment_intent.succeeded": S.SUCCEEDED, "payment_intent.payment_failed": S.FAILED}
# charge.refunded carries the charge's cumulative refunded total (and, before API 2022-11-15,
# the refunds themselves); charge.succeeded / charge.failed its outcome.
CHARGE_EVENTS = {"charge.succeeded": S.SUCCEEDED, "charge.failed": S.FAILED, "charge.refunded": S.SUCCEEDED}
# A refund object in every one of these (charge.refund.updated for some methods; refund.* for
# all refunds from API 2024-10-28).
REFUND_EVENTS = {"charge.refund.updated", "refund.created", "refund.updated", "refund.failed"}
# https://docs.stripe.com/api/refunds/object#refund_object-status ; canceled is money kept.
REFUND_STATUS = {"pending": "pending", "requires_action": "pending", "succeeded": "succeeded", "failed": "failed",
                 "canceled": "failed"}  # fmt: skip
DISPUTE_EVENTS = {
    "charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed",
    "charge.dispute.funds_withdrawn", "charge.dispute.funds_reinstated",
}  # fmt: skip
# https://docs.stripe.com/api/disputes/object#dispute_object-status: inquiries (warning_*) are
# disputes too until they close; a closed inquiry or a prevented dispute took nothing.
DISPUTE_STATUS = {
    "warning_needs_response": "open", "warning_under_review": "open", "needs_response": "open",
    "under_review": "open", "won": "won", "warning_closed": "won", "prevented": "won", "lost": "lost",
}  # fmt: skip


# One HTTP client for every StripeClient: httpx pools connections and is thread-safe.
_http_client: stripe.HTTPClient | None = None
_http_client_lock = threading.Lock()


class StripeProvider(ProviderAdapter):
    slug = "stripe"
    display_name = "Stripe"
    verification_method = "Stripe-Signature (HMAC-SHA256 of timestamp and body, 300 s tolerance), via the stripe SDK"
    api_base_url_setting = "STRIPE_API_BASE_URL"
    test_key_marker = "_test_"  # sk_test_..., rk_test_...
    refund_idempotent = True  # Idempotency-Key
    refund_idempotency_window_seconds = 24 * 3600
    signature_header = "Stripe-Signature"
    tolerance_seconds = stripe.Webhook.DEFAULT_TOLERANCE  # 300

    # --- Webhooks ----------------------------------------------------------------------------

    def verify_signature(self, *, body: bytes, headers: Mapping[str, str], account, query) -> None:
        header = headers.get(self.signature_header, "")
        if not header:
            raise SignatureMissing(f"Missing {self.signature_header} header")
        expired = False
        for secret in account.webhook_secrets():
            try:
                stripe.WebhookSignature.verify_header(body, header, secret, tolerance=self.tolerance_seconds)
                return
            except stripe.SignatureVerificationError as exc:
                # The SDK compares signatures first, so this message means the signature matched.
                expired |= str(exc).startswith("Timestamp outside the tolerance zone")
            except UnicodeDecodeError:
                break
        if expired:
            raise SignatureInvalid(f"{self.signature_header} timestamp is older than {self.tolerance_seconds} seconds")
        raise SignatureInvalid(f"{self.signature_header} does not match the body")

    def parse(self, *, payload: dict[str, Any], headers: Mapping[str, str], account) -> NormalizedEvent:
        envelope = self.validate(_Envelope, payload)
        kind = envelope.type
        common = {"event_id": envelope.id, "event_type": kind, "occurred_at": envelope.occurred_at, "raw": payload}
        # A test-mode event never moves money on a live account, nor a live one on a test account.
        if envelope.livemode == bool(account.test_mode):
            mode = "live" if envelope.livemode else "test"
            return NormalizedEvent(status=None, ignored_reason=f"a {mode}-mode event on a {'test' if account.test_mode else 'live'} account", **common)
        if kind in SESSION_EVENTS:
            session = self.validate(SessionEvent, payload, event_type=kind).data.object
            status = SESSION_EVENTS[kind]
            if status is None:
                # Delayed methods (bank debits) complete the session unpaid; the money follows in
                # async_payment_succeeded.
                status = S.SUCCEEDED if session.payment_status == "paid" else S.PROCESSING
            details = session.customer_details
            return NormalizedEvent(
                status=status,
                external_txn_id=session.payment_intent or "",
                amount_minor=session.amount_total,
                currency=session.currency,
                reference=session.client_reference_id or metadata_text(session.metadata, "reference"),
                checkout_id=session.id,
                provider_student_id=metadata_text(session.metadata, "student_id"),
                payer={k: v for k, v in (details.model_dump() if details else {}).items() if v},
                **common,
            )
        if kind in INTENT_EVENTS:
            intent = self.validate(IntentEvent, payload, event_type=kind).data.object
            return NormalizedEvent(
                status=INTENT_EVENTS[kind],
                external_txn_id=intent.id,
                charge_id=intent.charge_id,
                amount_minor=intent.amount,
                currency=intent.currency,
                reference=metadata_text(intent.metadata, "reference"),
                provider_student_id=metadata_text(intent.metadata, "student_id"),
                **common,
            )
        if kind in CHARGE_EVENTS:
            charge = self.validate(ChargeEvent, payload, event_type=kind).data.object
            if charge.amount_refunded > charge.amount:
                raise PayloadInvalid(
                    [{"field": "data.object.amount_refunded", "message": "refunded more than the charge"}],
                    event_type=kind,
                )
            refunds = tuple(self._embedded_refunds(charge.refunds, charge.currency)) if kind == "charge.refunded" else ()
            return NormalizedEvent(
                status=CHARGE_EVENTS[kind],
                # The transaction is the PaymentIntent when there is one, else the charge itself.
                external_txn_id=charge.payment_intent or charge.id,
                charge_id=charge.id,
                amount_minor=charge.amount,
                currency=charge.currency,
                reference=metadata_text(charge.metadata, "reference"),
                provider_student_id=metadata_text(charge.metadata, "student_id"),
                refunds=refunds,
                # Stripe reports the cumulative refunded amount on the charge.
                refunded_total_minor=charge.amount_refunded if kind == "charge.refunded" else None,
                **common,
            )
        if kind in REFUND_EVENTS:
            refund = self.validate(RefundEvent, payload, event_type=kind).data.object
            state = REFUND_STATUS.get(refund.status or "pending", "pending")
            return NormalizedEvent(
                status=None,
                external_txn_id=refund.payment_intent or refund.charge or "",
                charge_id=refund.charge or "",
                currency=refund.currency,
                refunds=(RefundReport(key=refund.id, amount_minor=refund.amount, status=state),),
                **common,
            )
        if kind in DISPUTE_EVENTS:
            dispute = self.validate(DisputeEvent, payload, event_type=kind).data.object
            state = DISPUTE_STATUS.get(dispute.status)
            if state is None:
                raise PayloadInvalid(
                    [{"field": "data.object.status", "message": f"unknown dispute status {dispute.status!r}"}],
                    event_type=kind,
                )
            return NormalizedEvent(
                status=None,
                external_txn_id=dispute.payment_intent or dispute.charge,
                charge_id=dispute.charge,
                currency=dispute.currency,
                disputes=(DisputeReport(key=dispute.id or f"charge:{dispute.charge}", amount_minor=dispute.amount, status=state),),
                **common,
            )
        return NormalizedEvent(status=None, **common)

    def _embedded_refunds(self, refunds: Any, currency: str):
        """The refunds a charge embeds (API versions before 2022-11-15), each by its id. Entries
        that are not whole refund objects are left to the cumulative total."""
        data = refunds.get("data") if isinstance(refunds, dict) else refunds if isinstance(refunds, list) else None
        for item in data or []:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                continue
            amount = item.get("amount")
            if isinstance(amount, bool) or not isinstance(amount, int):
                continue
            try:
                minor = from_stripe_amount(amount, currency)
            except MoneyError:
                continue
            state = REFUND_STATUS.get(str(item.get("status") or "succeeded"), "pending")
            yield RefundReport(key=item["id"], amount_minor=minor, status=state)

    # --- Payment API (https://docs.stripe.com/api/checkout/sessions) --------------------------

    def client(self, account) -> stripe.StripeClient:
        """A client for this account only: key and base URL are per client, never set on the
        ``stripe`` module, so accounts and threads cannot leak into each other."""
        global _http_client
        with _http_client_lock:
            if _http_client is None:
                _http_client = stripe.HTTPXClient(timeout=self.api_timeout_seconds, allow_sync_methods=True)
        return stripe.StripeClient(
            self.secret_api_key(account),
            base_addresses={"api": self.api_base_url(account)},
            http_client=_http_client,
            # Our own callers retry with backoff; the SDK's quick retries reuse the idempotency key.
            max_network_retries=1,
        )

    def create_checkout(self, *, payment, return_urls) -> CheckoutResult:
        try:
            unit_amount = to_stripe_amount(payment.amount_minor, payment.currency)
        except MoneyError as exc:
            raise ProviderRejected(str(exc)) from exc
        metadata = {"reference": payment.reference or "", "payment_id": str(payment.pk)}
        if payment.provider_student_id:
            metadata["student_id"] = payment.provider_student_id
        params = {
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": payment.currency.lower(),
                        "unit_amount": unit_amount,
                        "product_data": {"name": _description(payment)},
                    },
                    "quantity": 1,
                }
            ],
            "success_url": return_urls.success_url,
            "cancel_url": return_urls.cancel_url,
            "client_reference_id": payment.reference or str(payment.pk),
            "metadata": metadata,
            # Copied onto the PaymentIntent so payment_intent.* events carry our reference too.
            "payment_intent_data": {"metadata": metadata},
        }
        if payment.payer.get("email"):
            params["customer_email"] = payment.payer["email"]
        # One session per payment, even if the caller retries after a timeout.
        session = self._call(
            lambda c: c.v1.checkout.sessions.create(params, {"idempotency_key": f"checkout-{payment.pk}"}),
            payment.account,
        )
        return CheckoutResult(
            redirect_url=session["url"],
            checkout_id=session["id"],
            provider_data={"stripe_session_id": session["id"]},
        )

    def fetch_status(self, *, payment) -> NormalizedStatus:
        if not payment.provider_checkout_id:
            raise ProviderRejected("No Stripe Checkout Session was started for this payment")
        session = self._call(lambda c: c.v1.checkout.sessions.retrieve(payment.provider_checkout_id), payment.account)
        currency = str(session["currency"]).upper()
        amount = self._amount(session["amount_total"], currency)
        intent_id = session.get("payment_intent") or ""
        if session["payment_status"] == "paid":
            refunded = 0
            if intent_id:
                intent = self._call(
                    lambda c: c.v1.payment_intents.retrieve(intent_id, {"expand": ["latest_charge"]}), payment.account
                )
                charge = intent.get("latest_charge")
                if charge and not isinstance(charge, str):
                    refunded = self._amount(charge["amount_refunded"], currency)
            return NormalizedStatus(
                S.SUCCEEDED, intent_id, amount, currency, refunded_total_minor=refunded, detail="refunded" if refunded else "paid"
            )
        if session["status"] == "expired":
            return NormalizedStatus(S.EXPIRED, intent_id, None, currency, detail="session expired")
        if session["status"] == "complete":
            return NormalizedStatus(S.PROCESSING, intent_id, None, currency, detail="awaiting a delayed payment")
        return NormalizedStatus(S.PENDING, intent_id, None, currency, detail="session open")

    def refund(self, *, payment, amount_minor: int, idempotency_key: str, reason: str = "") -> RefundResult:
        """``POST /v1/refunds`` of ``amount_minor`` of the payment's PaymentIntent
        (https://docs.stripe.com/api/refunds/create). Sent with Stripe's Idempotency-Key: the same
        key within 24 hours answers the first refund again instead of making a second one
        (https://docs.stripe.com/api/idempotent_requests). Our reason goes in the metadata:
        Stripe's own ``reason`` only takes its three codes."""
        if not payment.external_txn_id:
            raise ProviderRejected("The payment has no Stripe PaymentIntent to refund")
        try:
            amount = to_stripe_amount(amount_minor, payment.currency)
        except MoneyError as exc:
            raise ProviderRejected(str(exc)) from exc
        params = {
            "payment_intent": payment.external_txn_id,
            "amount": amount,
            "metadata": {"reference": payment.reference or "", "refund_request": idempotency_key, "reason": reason[:500]},
        }
        refund = self._call(
            lambda c: c.v1.refunds.create(params, {"idempotency_key": idempotency_key}), payment.account
        )
        return self._refund_result(refund, payment.currency)

    def refund_status(self, *, payment, refund_id: str) -> RefundResult:
        """``GET /v1/refunds/<id>``: a pending refund (bank debits, some cards) succeeds or fails later."""
        refund = self._call(lambda c: c.v1.refunds.retrieve(refund_id), payment.account)
        return self._refund_result(refund, payment.currency)

    def _refund_result(self, refund: Mapping[str, Any], currency: str) -> RefundResult:
        status = REFUND_STATUS.get(str(refund.get("status")))
        if status is None or not refund.get("id"):
            raise ProviderRejected(f"Stripe answered a refund we cannot read (status {refund.get('status')!r})")
        answered = str(refund.get("currency") or currency).upper()
        if answered != currency:
            raise ProviderRejected(f"Stripe refunded in {answered}, the payment is in {currency}")
        return RefundResult(
            refund_id=str(refund["id"]),
            status=status,
            amount_minor=self._amount(refund.get("amount"), currency),
            detail=str(refund.get("failure_reason") or refund.get("status")),
        )

    def _call(self, request, account):
        """Run one SDK call and return the object as plain dicts; map Stripe's errors onto ours
        (retry later, or give up)."""
        try:
            return request(self.client(account)).to_dict()
        except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
            raise ProviderUnavailable(f"Stripe unavailable: {type(exc).__name__}") from exc
        except stripe.StripeError as exc:
            if exc.http_status is None or exc.http_status >= 500:
                raise ProviderUnavailable(f"Stripe answered HTTP {exc.http_status}") from exc
            raise ProviderRejected(f"Stripe refused the request (HTTP {exc.http_status}): {exc.user_message or exc.code}") from exc

    @staticmethod
    def _amount(value: Any, currency: str) -> int:
        try:
            return from_stripe_amount(int(value), currency)
        except (MoneyError, TypeError, ValueError) as exc:
            raise ProviderRejected(f"Stripe reported an amount we cannot take exactly: {value!r} {currency}") from exc


def _description(payment) -> str:
    return f"{payment.school.name} fees ({payment.reference or payment.pk})"[:250]
