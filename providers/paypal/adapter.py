"""PayPal: Orders v2 checkout (create the order, send the payer to approve it, capture it),
webhooks verified by PayPal's own verify-webhook-signature API, refunds of captures.

Webhooks (https://developer.paypal.com/api/rest/webhooks/rest/): PayPal signs each delivery with
its own RSA key over ``<transmission id>|<transmission time>|<webhook id>|<CRC32 of the body>``
and names the signing certificate in ``PAYPAL-CERT-URL``. We do not fetch certificates: the
delivery's headers, our webhook id and the raw event go to ``POST /v1/notifications/
verify-webhook-signature`` (https://developer.paypal.com/api/webhooks/v1/#verify-webhook-
signature_post), which answers ``verification_status`` SUCCESS or FAILURE. That is the one
outbound call made while a webhook is received: PayPal documents no check we could make alone
without fetching its certificate. Its OAuth token is cached; when PayPal cannot be reached the
delivery is refused (401, nothing stored) and PayPal retries it (up to 25 times over 3 days).
Before calling out, a delivery must carry every transmission header, ``SHA256withRSA`` and a
certificate URL on PayPal's own host, so a stranger's junk costs no call.

Events we act on:
- ``PAYMENT.CAPTURE.COMPLETED`` / ``.PENDING`` / ``.DENIED`` / ``.DECLINED``: the capture's
  outcome; the capture id is the transaction, ``supplementary_data.related_ids.order_id`` the
  checkout, ``custom_id`` our reference.
- ``PAYMENT.CAPTURE.REFUNDED`` / ``.REVERSED``: a refund resource keyed by its own id; the
  capture is the ``up`` link's last segment.
- ``CHECKOUT.ORDER.APPROVED``: the payer approved; nothing is paid until the order is captured.
  It is marked ``requires_confirmation``: the worker's ``fetch_status`` captures the order and
  reports the capture (so an approval is captured even if the payer never comes back).
- ``CUSTOMER.DISPUTE.CREATED`` / ``.UPDATED`` / ``.RESOLVED``: a dispute of the capture named in
  ``disputed_transactions[].seller_transaction_id``.
Everything else is ignored (2xx). The event id is PayPal's ``WH-...`` id, the same on every
redelivery. Amounts are decimal strings of major units (``"100.00"``), converted exactly.

Credentials: the account's ``credentials`` hold ``client_id``; ``api_key`` is the client secret;
``webhook_secret`` is the webhook id PayPal gave the webhook (it is not secret, but it is what a
delivery is bound to). Test-mode accounts use the sandbox (``PAYPAL_SANDBOX_API_BASE_URL``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from core.money import MoneyError, from_minor
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
from providers.common import CurrencyCode, Identifier, major_units, minor_or_error
from providers.errors import (
    PayloadInvalid,
    PayloadMalformed,
    ProviderRejected,
    ProviderUnavailable,
    SignatureInvalid,
    SignatureMissing,
)

S = PaymentStatus

TRANSMISSION_HEADERS = (
    "paypal-transmission-id",
    "paypal-transmission-time",
    "paypal-transmission-sig",
    "paypal-cert-url",
    "paypal-auth-algo",
)
AUTH_ALGO = "SHA256withRSA"
# PayPal serves its webhook certificates from its API hosts (api.paypal.com, api-m.paypal.com and
# their sandbox twins); nothing else may be named as the signer.
CERT_HOST_SUFFIXES = (".paypal.com",)

CAPTURE_STATUS = {
    "COMPLETED": S.SUCCEEDED, "PENDING": S.PENDING, "DECLINED": S.FAILED, "DENIED": S.FAILED, "FAILED": S.FAILED,
    # A refunded capture was paid: the refunds are separate facts.
    "REFUNDED": S.SUCCEEDED, "PARTIALLY_REFUNDED": S.SUCCEEDED,
}  # fmt: skip
REFUND_STATUS = {"COMPLETED": "succeeded", "PENDING": "pending", "CANCELLED": "failed", "FAILED": "failed"}
DISPUTE_OUTCOME = {"RESOLVED_SELLER_FAVOUR": "won", "RESOLVED_BUYER_FAVOUR": "lost", "RESOLVED_WITH_PAYOUT": "lost"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Money(_Model):
    currency_code: CurrencyCode
    value: Any

    @field_validator("value")
    @classmethod
    def _value(cls, value: Any, info: ValidationInfo) -> int:
        if not isinstance(value, str):  # PayPal always writes amounts as strings
            raise ValueError("amount must be a decimal string")
        return minor_or_error(major_units, value, info.data.get("currency_code"))


class Link(_Model):
    href: str
    rel: str


class RelatedIds(_Model):
    order_id: str = ""


class SupplementaryData(_Model):
    related_ids: RelatedIds = RelatedIds()


class Capture(_Model):
    id: Identifier
    status: str
    amount: Money
    custom_id: str = ""
    invoice_id: str = ""
    supplementary_data: SupplementaryData = SupplementaryData()
    links: list[Link] = []


class Refund(_Model):
    id: Identifier
    status: str
    amount: Money
    links: list[Link] = []


class PurchaseUnit(_Model):
    reference_id: str = ""
    custom_id: str = ""
    amount: Money


class Order(_Model):
    id: Identifier
    status: str = ""
    purchase_units: list[PurchaseUnit] = Field(min_length=1)


class DisputedTransaction(_Model):
    seller_transaction_id: Identifier


class DisputeOutcome(_Model):
    outcome_code: str = ""


class Dispute(_Model):
    dispute_id: Identifier
    status: str = ""
    dispute_amount: Money
    disputed_transactions: list[DisputedTransaction] = Field(min_length=1)
    dispute_outcome: DisputeOutcome | None = None


class Event(_Model):
    id: Identifier
    event_type: Identifier
    resource: dict[str, Any]


def capture_id_from_links(links: list[Link]) -> str:
    """A refund names its capture only through its ``up`` link (``.../captures/<id>``)."""
    for link in links:
        path = urlsplit(link.href).path.rstrip("/")
        if link.rel == "up" and "/captures/" in path:
            return path.rsplit("/", 1)[-1]
    return ""


class PayPalProvider(ProviderAdapter):
    slug = "paypal"
    display_name = "PayPal"
    verification_method = "PayPal's verify-webhook-signature API (transmission headers, webhook id and the event)"
    signature_header = "paypal-transmission-sig"
    api_base_url_setting = "PAYPAL_API_BASE_URL"
    # An approval is not a payment: the worker captures the order through fetch_status.
    needs_confirmation = True
    verifies_with_api = True
    # PayPal-Request-Id makes a refund idempotent, but PayPal does not document for how long it is
    # kept for refunds: a refund whose answer was lost is checked by staff, not sent again.
    refund_idempotent = False

    # --- Webhooks ------------------------------------------------------------------------------

    def verify_signature(self, *, body: bytes, headers: Mapping[str, str], account, query) -> None:
        values = {name: (headers.get(name) or "").strip() for name in TRANSMISSION_HEADERS}
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise SignatureMissing(f"Missing {', '.join(missing)} header")
        if values["paypal-auth-algo"] != AUTH_ALGO:
            raise SignatureInvalid(f"paypal-auth-algo must be {AUTH_ALGO}")
        cert = urlsplit(values["paypal-cert-url"])
        host = (cert.hostname or "").lower()
        if cert.scheme != "https" or not host.endswith(CERT_HOST_SUFFIXES):
            raise SignatureInvalid("paypal-cert-url is not on PayPal's host")
        # The raw event goes to PayPal byte for byte: re-encoding it could change what was signed.
        # Not yet authenticated: junk is refused as unsigned, not kept as a dead letter.
        try:
            event = self.decode_json(body)
        except PayloadMalformed as exc:
            raise SignatureInvalid("The body is not a PayPal event") from exc
        if not isinstance(event.get("id"), str):
            raise SignatureInvalid("The body is not a PayPal event")
        for webhook_id in account.webhook_secrets():
            request = {
                "auth_algo": values["paypal-auth-algo"],
                "cert_url": values["paypal-cert-url"],
                "transmission_id": values["paypal-transmission-id"],
                "transmission_sig": values["paypal-transmission-sig"],
                "transmission_time": values["paypal-transmission-time"],
                "webhook_id": webhook_id,
            }
            content = json.dumps(request)[:-1].encode() + b', "webhook_event": ' + body + b"}"
            try:
                answer = self._call(account, "POST", "/v1/notifications/verify-webhook-signature", content=content)
            except (ProviderUnavailable, ProviderRejected) as exc:
                # Nothing is stored and PayPal retries the delivery later.
                raise SignatureInvalid(f"PayPal could not verify the delivery now ({exc.detail}); it will be retried") from exc
            if answer.get("verification_status") == "SUCCESS":
                return
        raise SignatureInvalid("PayPal did not verify paypal-transmission-sig for this webhook")

    def parse(self, *, payload: dict[str, Any], headers: Mapping[str, str], account) -> NormalizedEvent:
        envelope = self.validate(Event, payload)
        kind, resource = envelope.event_type, envelope.resource
        if kind.startswith("PAYMENT.CAPTURE.") and kind not in ("PAYMENT.CAPTURE.REFUNDED", "PAYMENT.CAPTURE.REVERSED"):
            capture = self._resource(Capture, resource, kind)
            status = CAPTURE_STATUS.get(capture.status.upper())
            if status is None:
                return self._ignored(envelope, f"a capture in state {capture.status} moves no money")
            return NormalizedEvent(
                event_id=envelope.id, event_type=kind, status=status, external_txn_id=capture.id,
                amount_minor=capture.amount.value, currency=capture.amount.currency_code,
                reference=capture.custom_id or capture.invoice_id,
                checkout_id=capture.supplementary_data.related_ids.order_id, raw=payload,
            )  # fmt: skip
        if kind in ("PAYMENT.CAPTURE.REFUNDED", "PAYMENT.CAPTURE.REVERSED"):
            refund = self._resource(Refund, resource, kind)
            capture_id = capture_id_from_links(refund.links)
            if not capture_id:
                self._invalid("resource.links", "the refund names no capture (no 'up' link)", kind)
            return NormalizedEvent(
                event_id=envelope.id, event_type=kind, status=None, external_txn_id=capture_id,
                currency=refund.amount.currency_code,
                refunds=(RefundReport(key=refund.id, amount_minor=refund.amount.value,
                                      status=REFUND_STATUS.get(refund.status.upper(), "pending")),),
                raw=payload,
            )  # fmt: skip
        if kind == "CHECKOUT.ORDER.APPROVED":
            order = self._resource(Order, resource, kind)
            unit = order.purchase_units[0]
            return NormalizedEvent(
                event_id=envelope.id, event_type=kind, status=S.PENDING, checkout_id=order.id,
                reference=unit.custom_id, amount_minor=unit.amount.value, currency=unit.amount.currency_code,
                requires_confirmation=self.needs_confirmation, raw=payload,
            )  # fmt: skip
        if kind.startswith("CUSTOMER.DISPUTE."):
            dispute = self._resource(Dispute, resource, kind)
            outcome = DISPUTE_OUTCOME.get(dispute.dispute_outcome.outcome_code if dispute.dispute_outcome else "", "open")
            return NormalizedEvent(
                event_id=envelope.id, event_type=kind, status=None,
                external_txn_id=dispute.disputed_transactions[0].seller_transaction_id,
                currency=dispute.dispute_amount.currency_code,
                disputes=(DisputeReport(key=dispute.dispute_id, amount_minor=dispute.dispute_amount.value,
                                        status=outcome if dispute.status.upper() == "RESOLVED" else "open"),),
                raw=payload,
            )  # fmt: skip
        return self._ignored(envelope, f"{kind} is not about a capture, a refund or a dispute")

    def _resource(self, model, resource: dict[str, Any], kind: str):
        try:
            return self.validate(model, resource, event_type=kind)
        except PayloadInvalid as exc:
            errors = [{**error, "field": f"resource.{error['field']}"} for error in exc.errors]
            raise PayloadInvalid(errors, event_type=kind) from exc

    @staticmethod
    def _invalid(field: str, message: str, kind: str):
        raise PayloadInvalid([{"field": field, "message": message}], event_type=kind)

    @staticmethod
    def _ignored(envelope: Event, reason: str) -> NormalizedEvent:
        return NormalizedEvent(
            event_id=envelope.id, event_type=envelope.event_type, status=None, ignored_reason=reason,
            raw={"id": envelope.id},
        )

    # --- The API (https://developer.paypal.com/docs/api/orders/v2/) ---------------------------

    def api_base_url(self, account=None) -> str:
        name = "PAYPAL_SANDBOX_API_BASE_URL" if account is not None and account.test_mode else "PAYPAL_API_BASE_URL"
        return getattr(settings, name).rstrip("/")

    def _token_cache_key(self, account) -> tuple[str, str, str]:
        client_id = str((account.credentials or {}).get("client_id") or "").strip()
        secret = (account.api_key or "").strip()
        if not client_id or not secret:
            raise ProviderRejected("The PayPal account needs its client id (credentials) and client secret (API key)")
        base = self.api_base_url(account)
        fingerprint = hashlib.sha256(f"{base}|{client_id}|{secret}".encode()).hexdigest()[:24]
        return f"paypal-token:{account.pk}:{fingerprint}", client_id, secret

    def access_token(self, account) -> str:
        """An OAuth2 client-credentials token, cached until shortly before it expires."""
        cache_key, client_id, secret = self._token_cache_key(account)
        token = cache.get(cache_key)
        if token:
            return token
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        with self.http_client() as client:
            data = self.request_json(
                client, "POST", f"{self.api_base_url(account)}/v1/oauth2/token", data={"grant_type": "client_credentials"},
                headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
            )  # fmt: skip
        token = data.get("access_token")
        if not token:
            raise ProviderRejected("PayPal gave no access token")
        try:
            lifetime = int(data.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600
        cache.set(cache_key, token, timeout=max(lifetime - 300, 60))
        return token

    def _call(self, account, method: str, path: str, *, request_id: str = "", **kwargs) -> dict[str, Any]:
        """One API call with a cached token; a token PayPal no longer takes (revoked, or the
        credentials changed) is dropped and the call made once more with a new one."""
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.access_token(account)}", "Content-Type": "application/json",
                       "Prefer": "return=representation"}  # fmt: skip
            if request_id:
                # PayPal's idempotency key: the same request id returns the first answer.
                headers["PayPal-Request-Id"] = request_id
            with self.http_client() as client:
                try:
                    return self.request_json(client, method, f"{self.api_base_url(account)}{path}", headers=headers, **kwargs)
                except ProviderRejected as exc:
                    if attempt == 2 or "(HTTP 401)" not in exc.detail:
                        raise
                    cache.delete(self._token_cache_key(account)[0])
        raise AssertionError("unreachable")

    def create_checkout(self, *, payment, return_urls) -> CheckoutResult:
        if not payment.reference:
            raise ProviderRejected("The payment has no reference to give PayPal as custom_id")
        try:
            value = str(from_minor(payment.amount_minor, payment.currency))
        except MoneyError as exc:
            raise ProviderRejected(str(exc)) from exc
        body = {
            "intent": "CAPTURE",
            "purchase_units": [{
                "reference_id": str(payment.pk),
                "custom_id": payment.reference[:127],
                "description": f"{payment.school.name} fees"[:127],
                "amount": {"currency_code": payment.currency, "value": value},
            }],
            "payment_source": {"paypal": {"experience_context": {
                "return_url": return_urls.success_url, "cancel_url": return_urls.cancel_url,
                "user_action": "PAY_NOW", "shipping_preference": "NO_SHIPPING",
            }}},
        }  # fmt: skip
        order = self._call(payment.account, "POST", "/v2/checkout/orders", json=body, request_id=f"order-{payment.pk}")
        link = next((x.get("href") for x in order.get("links") or [] if x.get("rel") in ("payer-action", "approve")), "")
        if not order.get("id") or not link:
            raise ProviderRejected("PayPal did not return an order to approve")
        return CheckoutResult(redirect_url=link, checkout_id=order["id"])

    def fetch_status(self, *, payment) -> NormalizedStatus:
        """The order's state; an approved order is captured here first (idempotently, with a
        PayPal-Request-Id per payment), so an approval becomes a payment exactly once."""
        account = payment.account
        if payment.provider_checkout_id:
            order = self._call(account, "GET", f"/v2/checkout/orders/{payment.provider_checkout_id}")
            if order.get("status") == "APPROVED":
                order = self._call(
                    account, "POST", f"/v2/checkout/orders/{payment.provider_checkout_id}/capture",
                    content=b"{}", request_id=f"capture-{payment.pk}",
                )  # fmt: skip
            return self._order_status(order, payment.currency)
        if payment.external_txn_id:
            capture = self._call(account, "GET", f"/v2/payments/captures/{payment.external_txn_id}")
            return self._capture_status(capture, refunds=())
        raise ProviderRejected("The payment has no PayPal order or capture to ask about")

    def _order_status(self, order: Mapping[str, Any], currency: str) -> NormalizedStatus:
        state = str(order.get("status") or "")
        if state == "VOIDED":
            return NormalizedStatus(status=S.CANCELLED, detail="order voided")
        units = order.get("purchase_units") or [{}]
        payments = units[0].get("payments") or {}
        captures = payments.get("captures") or []
        if state != "COMPLETED" or not captures:
            return NormalizedStatus(status=S.PENDING, detail=f"order {state.lower() or 'unknown'}")
        refunds = tuple(self._refund_report(r) for r in payments.get("refunds") or [])
        return self._capture_status(captures[0], refunds=refunds)

    def _capture_status(self, capture: Mapping[str, Any], *, refunds: tuple[RefundReport, ...]) -> NormalizedStatus:
        try:
            parsed = Capture.model_validate(capture)
        except ValueError as exc:
            raise ProviderRejected("PayPal answered a capture we cannot read exactly") from exc
        status = CAPTURE_STATUS.get(parsed.status.upper(), S.PENDING)
        return NormalizedStatus(
            status=status, external_txn_id=parsed.id, amount_minor=parsed.amount.value if status == S.SUCCEEDED else None,
            currency=parsed.amount.currency_code, refunds=refunds, detail=f"capture {parsed.status.lower()}",
        )  # fmt: skip

    @staticmethod
    def _refund_report(refund: Mapping[str, Any]) -> RefundReport:
        try:
            parsed = Refund.model_validate(refund)
        except ValueError as exc:
            raise ProviderRejected("PayPal answered a refund we cannot read exactly") from exc
        return RefundReport(key=parsed.id, amount_minor=parsed.amount.value,
                            status=REFUND_STATUS.get(parsed.status.upper(), "pending"))  # fmt: skip

    def refund(self, *, payment, amount_minor: int, idempotency_key: str, reason: str = "") -> RefundResult:
        """``POST /v2/payments/captures/{capture_id}/refund`` with the amount in major units."""
        if not payment.external_txn_id:
            raise ProviderRejected("The payment has no PayPal capture to refund")
        try:
            value = str(from_minor(amount_minor, payment.currency))
        except MoneyError as exc:
            raise ProviderRejected(str(exc)) from exc
        body: dict[str, Any] = {"amount": {"value": value, "currency_code": payment.currency}}
        if reason:
            body["note_to_payer"] = reason[:255]
        data = self._call(
            payment.account, "POST", f"/v2/payments/captures/{payment.external_txn_id}/refund",
            json=body, request_id=idempotency_key[:108],
        )  # fmt: skip
        return self._refund_result(data)

    def refund_status(self, *, payment, refund_id: str) -> RefundResult:
        return self._refund_result(self._call(payment.account, "GET", f"/v2/payments/refunds/{refund_id}"))

    def _refund_result(self, data: Mapping[str, Any]) -> RefundResult:
        report = self._refund_report(data)
        return RefundResult(refund_id=report.key, status=report.status, amount_minor=report.amount_minor,
                            detail=str(data.get("status", "")))  # fmt: skip
