"""M-Pesa Daraja, Lipa Na M-Pesa Online (STK Push): an on-phone prompt, an unsigned callback.

Daraja's STK callback (https://developer.safaricom.co.ke/APIs/MpesaExpressSimulate) carries no
signature, no secret, no timestamp and no event id: anyone who knows the URL could post a
well-formed "success". So a callback is trusted in three layers:

1. The callback URL we give Daraja for each payment carries an unguessable token,
   ``?t=<hex HMAC-SHA256(webhook secret, "mpesa-callback:<payment id>")>``. Nothing is stored for
   it; the account's webhook secret (current or, during a rotation, previous) derives it again.
2. ``verify_signature`` looks up the ``CheckoutRequestID`` among the STK pushes this service
   started for that account (one indexed query, no outbound call) and checks the token against
   that payment. An unknown id or a wrong token is answered 401 and nothing is stored.
3. Every callback has ``requires_confirmation``: the worker asks Daraja's STK Push Query for the
   real result before any money moves, and the amount taken is the one we asked for (the query
   does not report amounts; the callback's claim is never taken).

The event id is the ``CheckoutRequestID``: Daraja sends one result per push, so a redelivery is a
duplicate. Amounts are whole Kenyan shillings (Daraja takes no cents). Refunds go through
Daraja's separate Reversal API, which is not built here (``refund`` is not supported).

Credentials live in the account's encrypted ``credentials``: ``consumer_key``,
``consumer_secret``, ``shortcode``, ``passkey`` and, for a till (Buy Goods), ``till_number``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import pydantic
from django.conf import settings
from django.core.cache import cache
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from core.money import MoneyError, exponent, scale_units
from core.status import PaymentStatus
from providers.base import (
    CheckoutResult,
    NormalizedEvent,
    NormalizedStatus,
    ProviderAdapter,
    field_errors,
    storable_text_problem,
    stored_text_limits,
)
from providers.common import Identifier, integer_units, minor_or_error
from providers.errors import PayloadInvalid, PayloadMalformed, ProviderRejected, SignatureInvalid, SignatureMissing
from providers.mpesa import c2b

S = PaymentStatus

CURRENCY = "KES"
TOKEN_PARAM = "t"
_TOKEN_SHAPE = re.compile(r"[0-9a-f]{64}")  # callback_token's hex HMAC-SHA256
# ResultCode -> our state (same codes in the callback and in STK Push Query). 0 is paid; 1032 is
# the payer pressing cancel; everything else (1 insufficient funds, 1037 phone unreachable, 1019
# expired, 2001 wrong PIN, ...) is a failure the payer may retry.
RESULT_CANCELLED = 1032

REQUIRED_CREDENTIALS = ("consumer_key", "consumer_secret", "shortcode", "passkey")


def callback_token(secret: str, payment_id: Any) -> str:
    """The per-payment token in the callback URL: unguessable without the account's secret."""
    return hmac.new(secret.encode(), f"mpesa-callback:{payment_id}".encode(), hashlib.sha256).hexdigest()


def whole_shillings_to_minor(value: Any, currency: str = CURRENCY) -> int:
    """Daraja's whole-shilling amount (``1500`` or ``1500.00``) -> KES minor units (150000)."""
    return scale_units(integer_units(value), from_exponent=0, to_exponent=exponent(currency), currency=currency)


def minor_to_whole_shillings(amount_minor: int) -> int:
    """KES minor units -> whole shillings; refuses cents rather than rounding them away."""
    try:
        return scale_units(amount_minor, from_exponent=exponent(CURRENCY), to_exponent=0, currency=CURRENCY)
    except MoneyError as exc:
        raise MoneyError("M-Pesa takes whole shillings only: this amount has cents") from exc


def normalize_msisdn(phone: str) -> str:
    """``0712 345 678``, ``+254712345678``, ``712345678`` -> ``254712345678`` (Daraja's form)."""
    digits = re.sub(r"[\s\-()]", "", phone or "").removeprefix("+")
    if re.fullmatch(r"0[17]\d{8}", digits):
        digits = "254" + digits[1:]
    elif re.fullmatch(r"[17]\d{8}", digits):
        digits = "254" + digits
    if not re.fullmatch(r"254[17]\d{8}", digits):
        raise ProviderRejected("Enter a Kenyan mobile number such as 0712 345 678")
    return digits


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class MetadataItem(_Model):
    Name: str
    Value: Any = None


class StkMetadata(_Model):
    Item: list[MetadataItem]


class StkCallback(_Model):
    MerchantRequestID: Identifier
    CheckoutRequestID: Identifier
    ResultCode: StrictInt
    ResultDesc: str = ""
    CallbackMetadata: StkMetadata | None = None


class _Body(_Model):
    stkCallback: StkCallback


class Callback(_Model):
    Body: _Body


class Paid(_Model):
    """The items a successful callback must carry (looked up by name, never by position)."""

    Amount: Any
    MpesaReceiptNumber: Identifier
    PhoneNumber: Any = None

    @field_validator("Amount")
    @classmethod
    def _amount(cls, value: Any) -> int:
        minor = minor_or_error(whole_shillings_to_minor, value, CURRENCY)
        if minor <= 0:
            raise ValueError("amount must be greater than zero")
        return minor


class Credentials(_Model):
    consumer_key: str = Field(min_length=1)
    consumer_secret: str = Field(min_length=1)
    shortcode: str = Field(pattern=r"^\d{5,7}$")
    passkey: str = Field(min_length=1)
    till_number: str | None = Field(default=None, pattern=r"^\d{5,7}$")
    transaction_type: Literal["CustomerPayBillOnline", "CustomerBuyGoodsOnline"] | None = None


def _status_for(result_code: int) -> PaymentStatus:
    if result_code == 0:
        return S.SUCCEEDED
    if result_code == RESULT_CANCELLED:
        return S.CANCELLED
    return S.FAILED


class MpesaProvider(ProviderAdapter):
    slug = "mpesa"
    display_name = "M-Pesa (Daraja)"
    verification_method = "unsigned: per-payment token in the callback URL + a CheckoutRequestID we started; confirmed by STK Push Query"
    api_base_url_setting = "MPESA_API_BASE_URL"
    # No signature_header: Daraja signs nothing, and every callback is confirmed by STK Push Query.
    needs_confirmation = True
    # The checkout is an STK push: a prompt on the payer's phone.
    checkout_requires_phone = True

    # --- Webhooks ----------------------------------------------------------------------------

    def verify_signature(self, *, body: bytes, headers: Mapping[str, str], account, query) -> None:
        token = (query or {}).get(TOKEN_PARAM, "")
        if not token:
            raise SignatureMissing("Missing callback token (the t query parameter)")
        # A token that cannot be one of ours is refused before the body is read at all.
        if not _TOKEN_SHAPE.fullmatch(token):
            raise SignatureInvalid("Unknown CheckoutRequestID or wrong callback token")
        try:
            checkout_id = self.decode_json(body)["Body"]["stkCallback"]["CheckoutRequestID"]
        except (PayloadMalformed, KeyError, TypeError) as exc:
            # Nothing identifies a push we started: refuse it as unauthenticated, store nothing.
            raise SignatureInvalid("Callback does not name a CheckoutRequestID") from exc
        if not isinstance(checkout_id, str) or not checkout_id:
            raise SignatureInvalid("Callback does not name a CheckoutRequestID")
        if storable_text_problem(checkout_id, stored_text_limits()["checkout_id"]):
            # Cannot be a push we started (it could not have been stored): no query for it.
            raise SignatureInvalid("Unknown CheckoutRequestID or wrong callback token")
        payment_id = account.payments.filter(provider_checkout_id=checkout_id).values_list("pk", flat=True).first()
        provided = token.encode("ascii", "replace")
        matched = False
        # Always compare against something so an unknown id and a wrong token cost the same.
        for secret in account.webhook_secrets():
            expected = callback_token(secret, payment_id or "unknown").encode()
            matched |= hmac.compare_digest(expected, provided)
        if payment_id is None or not matched:
            raise SignatureInvalid("Unknown CheckoutRequestID or wrong callback token")

    def parse(self, *, payload: dict[str, Any], headers: Mapping[str, str], account) -> NormalizedEvent:
        if c2b.is_c2b_payload(payload):
            # Received on the C2B confirmation URL (webhooks.c2b), never on this STK callback URL.
            return c2b.c2b_confirmation_event(self.validate(c2b.C2BPayment, payload, event_type=c2b.EVENT_TYPE), payload)
        callback = self.validate(Callback, payload).Body.stkCallback
        status = _status_for(callback.ResultCode)
        amount_minor, receipt, payer = 0, "", {}
        if status == S.SUCCEEDED:
            if callback.CallbackMetadata is None:
                self._invalid("Body.stkCallback.CallbackMetadata", "Field required")
            items = {item.Name: item.Value for item in callback.CallbackMetadata.Item}
            try:
                paid = self.validate(Paid, items, event_type="stk.callback")
            except PayloadInvalid as exc:
                prefix = "Body.stkCallback.CallbackMetadata.Item."
                raise PayloadInvalid(
                    [{**error, "field": prefix + error["field"]} for error in exc.errors], event_type="stk.callback"
                ) from exc
            amount_minor, receipt = paid.Amount, paid.MpesaReceiptNumber
            if paid.PhoneNumber is not None:
                payer = {"phone": str(paid.PhoneNumber)}
        return NormalizedEvent(
            event_id=callback.CheckoutRequestID,
            event_type=f"stk.callback.{callback.ResultCode}",
            status=status,
            external_txn_id=receipt,
            amount_minor=amount_minor,
            currency=CURRENCY,
            checkout_id=callback.CheckoutRequestID,
            payer=payer,
            # Unsigned: the worker confirms with STK Push Query before anything moves.
            requires_confirmation=self.needs_confirmation,
            raw=payload,
        )

    @staticmethod
    def _invalid(field: str, message: str):
        raise PayloadInvalid([{"field": field, "message": message}], event_type="stk.callback")

    # --- Payment API (https://developer.safaricom.co.ke/APIs/MpesaExpressSimulate) ------------

    def api_base_url(self, account=None) -> str:
        name = "MPESA_SANDBOX_API_BASE_URL" if account is not None and account.test_mode else "MPESA_API_BASE_URL"
        return getattr(settings, name).rstrip("/")

    def credentials(self, account) -> Credentials:
        try:
            return Credentials.model_validate(account.credentials or {})
        except pydantic.ValidationError as exc:
            problems = ", ".join(f"{e['field']}: {e['message']}" for e in field_errors(exc))
            raise ProviderRejected(f"The M-Pesa account's credentials are incomplete ({problems})") from exc

    def access_token(self, account) -> str:
        """An OAuth token (client credentials), cached until shortly before it expires (1 h)."""
        creds = self.credentials(account)
        base = self.api_base_url(account)
        fingerprint = hashlib.sha256(f"{base}|{creds.consumer_key}|{creds.consumer_secret}".encode()).hexdigest()[:24]
        cache_key = f"mpesa-token:{account.pk}:{fingerprint}"
        token = cache.get(cache_key)
        if token:
            return token
        basic = base64.b64encode(f"{creds.consumer_key}:{creds.consumer_secret}".encode()).decode()
        with self.http_client() as client:
            data = self.request_json(
                client,
                "GET",
                f"{base}/oauth/v1/generate",
                params={"grant_type": "client_credentials"},
                headers={"Authorization": f"Basic {basic}"},
            )
        token = data.get("access_token")
        if not token:
            raise ProviderRejected("Daraja gave no access token")
        try:
            lifetime = int(data.get("expires_in", 3599))
        except (TypeError, ValueError):
            lifetime = 3599
        cache.set(cache_key, token, timeout=max(lifetime - 120, 60))
        return token

    def _password(self, creds: Credentials, now: datetime | None = None) -> tuple[str, str]:
        """(Password, Timestamp): Password = base64(shortcode + passkey + timestamp)."""
        now = now or datetime.now(ZoneInfo(settings.MPESA_TIMESTAMP_TIMEZONE))
        timestamp = now.strftime("%Y%m%d%H%M%S")
        password = base64.b64encode(f"{creds.shortcode}{creds.passkey}{timestamp}".encode()).decode()
        return password, timestamp

    def create_checkout(self, *, payment, return_urls) -> CheckoutResult:
        """Send the STK prompt to ``payment.payer["phone"]``. The caller stores the returned
        ``checkout_id`` (CheckoutRequestID) before the callback can arrive."""
        if payment.currency != CURRENCY:
            raise ProviderRejected(f"M-Pesa collects KES only, not {payment.currency}")
        if not return_urls.callback_url:
            raise ProviderRejected("M-Pesa needs our callback URL")
        try:
            amount = minor_to_whole_shillings(payment.amount_minor)
        except MoneyError as exc:
            raise ProviderRejected(str(exc)) from exc
        if amount < 1:
            raise ProviderRejected("M-Pesa's smallest payment is KES 1")
        phone = normalize_msisdn(str((payment.payer or {}).get("phone", "")))
        account = payment.account
        creds = self.credentials(account)
        password, timestamp = self._password(creds)
        buy_goods = bool(creds.till_number) or creds.transaction_type == "CustomerBuyGoodsOnline"
        body = {
            "BusinessShortCode": creds.shortcode,
            "Password": password,
            "Timestamp": timestamp,
            "TransactionType": "CustomerBuyGoodsOnline" if buy_goods else "CustomerPayBillOnline",
            "Amount": amount,
            "PartyA": phone,
            "PartyB": creds.till_number or creds.shortcode,
            "PhoneNumber": phone,
            "CallBackURL": self.callback_url(return_urls.callback_url, account=account, payment=payment),
            # Shown to the payer; Daraja allows 12 characters (and 13 for the description).
            "AccountReference": re.sub(r"[^A-Za-z0-9]", "", payment.reference or "")[:12] or "SchoolFees",
            "TransactionDesc": "School fees",
        }
        with self.http_client() as client:
            data = self.request_json(
                client,
                "POST",
                f"{self.api_base_url(account)}/mpesa/stkpush/v1/processrequest",
                json=body,
                headers={"Authorization": f"Bearer {self.access_token(account)}"},
            )
        # ResponseCode "0" means the request was accepted, not that anything was paid.
        if str(data.get("ResponseCode")) != "0" or not data.get("CheckoutRequestID"):
            raise ProviderRejected(f"Daraja did not send the prompt: {data.get('ResponseDescription', 'no description')}")
        return CheckoutResult(
            checkout_id=data["CheckoutRequestID"],
            prompt_sent=True,
            message=data.get("CustomerMessage", ""),
            provider_data={"merchant_request_id": data.get("MerchantRequestID", ""), "msisdn": phone},
        )

    @staticmethod
    def callback_url(base_url: str, *, account, payment) -> str:
        """Our webhook URL with this payment's token added to its query."""
        parts = urlsplit(base_url)
        extra = urlencode({TOKEN_PARAM: callback_token(account.webhook_secret, payment.pk)})
        return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))

    def fetch_status(self, *, payment) -> NormalizedStatus:
        """STK Push Query. Daraja answers an error while the payer has not finished yet; that is
        retried later (``ProviderUnavailable`` for its 5xx). A paybill payment (no STK push, an
        M-Pesa receipt) is asked about through Transaction Status instead, whose answer arrives
        later at the result URL: until then the payment stays processing."""
        if not payment.provider_checkout_id and payment.external_txn_id:
            return self.c2b_status_query(payment=payment)
        if not payment.provider_checkout_id:
            raise ProviderRejected("No STK push was started for this payment")
        account = payment.account
        creds = self.credentials(account)
        password, timestamp = self._password(creds)
        body = {
            "BusinessShortCode": creds.shortcode,
            "Password": password,
            "Timestamp": timestamp,
            "CheckoutRequestID": payment.provider_checkout_id,
        }
        with self.http_client() as client:
            data = self.request_json(
                client,
                "POST",
                f"{self.api_base_url(account)}/mpesa/stkpushquery/v1/query",
                json=body,
                headers={"Authorization": f"Bearer {self.access_token(account)}"},
            )
        try:
            result_code = int(str(data.get("ResultCode")))
        except ValueError as exc:
            raise ProviderRejected(f"Daraja answered without a ResultCode: {data.get('ResponseDescription', '')}") from exc
        status = _status_for(result_code)
        return NormalizedStatus(
            status=status,
            # The query reports no amount: a success is for what we asked (the payment's amount).
            amount_minor=None,
            currency=CURRENCY,
            detail=str(data.get("ResultDesc", ""))[:200],
        )

    # --- Paybill (C2B): providers/mpesa/c2b.py says how it works --------------------------------

    def c2b_credentials(self, account) -> c2b.C2BCredentials:
        try:
            return c2b.C2BCredentials.model_validate(account.credentials or {})
        except pydantic.ValidationError as exc:
            problems = ", ".join(f"{e['field']}: {e['message']}" for e in field_errors(exc))
            raise ProviderRejected(f"The M-Pesa account is not set up for paybill payments ({problems})") from exc

    @staticmethod
    def c2b_url(account, kind: str, query: str = "") -> str:
        """Our C2B URL of ``kind`` (validation, confirmation, result, timeout) for the account."""
        token = c2b.c2b_token(account.webhook_secret, account.pk)
        url = f"{settings.PUBLIC_BASE_URL}/api/webhooks/c2b/{account.school.code}/{token}/{kind}"
        return f"{url}?{query}" if query else url

    def c2b_register_urls(self, *, account, response_type: str = "Completed") -> dict[str, Any]:
        """Register the account's validation and confirmation URLs for its paybill with Daraja."""
        creds = self.c2b_credentials(account)
        body = {
            "ShortCode": creds.paybill_number,
            "ResponseType": response_type,
            "ConfirmationURL": self.c2b_url(account, "confirmation"),
            "ValidationURL": self.c2b_url(account, "validation"),
        }
        with self.http_client() as client:
            data = self.request_json(
                client, "POST", f"{self.api_base_url(account)}/mpesa/c2b/v2/registerurl", json=body,
                headers={"Authorization": f"Bearer {self.access_token(account)}"},
            )  # fmt: skip
        if str(data.get("ResponseCode")) != "0":
            raise ProviderRejected(f"Daraja did not register the URLs: {data.get('ResponseDescription', 'no description')}")
        return {"shortcode": creds.paybill_number, "response": str(data.get("ResponseDescription", ""))[:200]}

    def c2b_status_query(self, *, payment) -> NormalizedStatus:
        """Ask Transaction Status about the payment's receipt; Daraja answers at the result URL."""
        account = payment.account
        creds = self.c2b_credentials(account)
        receipt = str(payment.external_txn_id)
        body = {
            "Initiator": creds.initiator_name,
            "SecurityCredential": creds.security_credential,
            "CommandID": "TransactionStatusQuery",
            "TransactionID": receipt,
            "PartyA": creds.paybill_number,
            "IdentifierType": "4",  # an organisation's shortcode
            "ResultURL": self.c2b_url(account, "result", urlencode({TOKEN_PARAM: c2b.status_token(account.webhook_secret, receipt)})),
            "QueueTimeOutURL": self.c2b_url(account, "timeout"),
            "Remarks": "Paybill payment check",
            "Occasion": "",
        }
        with self.http_client() as client:
            data = self.request_json(
                client, "POST", f"{self.api_base_url(account)}/mpesa/transactionstatus/v1/query", json=body,
                headers={"Authorization": f"Bearer {self.access_token(account)}"},
            )  # fmt: skip
        if str(data.get("ResponseCode")) != "0":
            raise ProviderRejected(f"Daraja did not take the status query: {data.get('ResponseDescription', 'no description')}")
        return NormalizedStatus(status=S.PROCESSING, currency=CURRENCY,
                                detail=f"asked Transaction Status ({str(data.get('ConversationID', ''))[:60]})")  # fmt: skip
