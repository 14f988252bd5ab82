"""M-Pesa paybill (C2B): a parent pays the school's business number from the M-Pesa menu, with the
student's number as the account number, and Daraja calls our validation and confirmation URLs.

Daraja (https://developer.safaricom.co.ke/APIs/CustomerToBusinessRegisterURL):
- ``POST /mpesa/c2b/v2/registerurl`` ``{ShortCode, ResponseType, ConfirmationURL, ValidationURL}``
  registers both URLs for a paybill or till. ``ResponseType`` (``Completed`` or ``Cancelled``) is
  what M-Pesa does when our validation URL does not answer in time. Daraja refuses URLs that
  contain words such as "M-Pesa", "Safaricom", "exe", "cmd", "SQL" or "query": ours have none.
- Validation (only when Safaricom has switched external validation on for the shortcode) and
  confirmation carry the same flat JSON: ``TransID`` (the M-Pesa receipt), ``TransAmount`` (whole
  shillings as a string, "10" or "100.00"), ``BusinessShortCode``, ``BillRefNumber`` (what the
  payer typed as the account number), ``MSISDN`` (masked in v2: ``25470****149``), names.
  Validation is answered ``{"ResultCode": "0", "ResultDesc": "Accepted"}`` or a rejection code
  (``C2B00012`` invalid account number, ``C2B00013`` invalid amount, ``C2B00015`` invalid
  shortcode, ``C2B00016`` other error).

Like the STK callback, nothing Daraja sends is signed. So: the URLs carry an unguessable token
per account (``c2b_token``); the account's IP allowlist applies; and a confirmation moves no money
by itself: the payment waits in ``processing`` while the Transaction Status API
(``POST /mpesa/transactionstatus/v1/query``, https://developer.safaricom.co.ke/APIs/TransactionStatus)
is asked about the receipt. Its answer comes back asynchronously to our result URL, which carries a
token for that receipt (``status_token``); only a ``Completed`` answer for that receipt, with its
amount, makes the payment succeeded. The query needs the shortcode's API initiator and its
security credential (generated on the Daraja portal), kept in the account's credentials.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from core.money import MoneyError, exponent, scale_units
from core.status import PaymentStatus
from providers.base import NormalizedEvent, NormalizedStatus
from providers.common import Identifier, integer_units, minor_or_error

S = PaymentStatus
CURRENCY = "KES"
EVENT_TYPE = "c2b.confirmation"
# Daraja's validation answers.
ACCEPTED = ("0", "Accepted")
INVALID_ACCOUNT = ("C2B00012", "Rejected: unknown account number")
INVALID_AMOUNT = ("C2B00013", "Rejected: invalid amount")
INVALID_SHORTCODE = ("C2B00015", "Rejected: wrong business number")
OTHER_ERROR = ("C2B00016", "Rejected")
# Daraja's limit for one M-Pesa payment (Daraja FAQ).
MAX_SHILLINGS = 250_000
# The Transaction Status ResultParameter values that settle a receipt either way.
COMPLETED = "completed"
NOT_PAID = {"declined", "failed", "cancelled", "reversed"}


def c2b_token(secret: str, account_id: Any) -> str:
    """The account's token in its C2B URLs: unguessable without its webhook secret."""
    return hmac.new(secret.encode(), f"mpesa-c2b:{account_id}".encode(), hashlib.sha256).hexdigest()


def status_token(secret: str, receipt: str) -> str:
    """The token in the result URL of one Transaction Status query: binds the answer to the
    receipt it was asked about."""
    return hmac.new(secret.encode(), f"mpesa-c2b-status:{receipt}".encode(), hashlib.sha256).hexdigest()


def token_matches(secrets: list[str], provided: str, make) -> bool:
    given = (provided or "").encode("ascii", "replace")
    matched = False
    for secret in secrets or ["no secret"]:  # always compare: an unknown account costs the same
        matched |= hmac.compare_digest(make(secret).encode(), given)
    return matched and bool(secrets)


def shillings_to_minor(value: Any) -> int:
    """``"10"``, ``"100.00"`` or ``10`` whole shillings -> KES minor units; cents are refused."""
    if isinstance(value, str):
        text = value.strip()
        whole, _, cents = text.partition(".")
        if cents and set(cents) != {"0"}:
            raise MoneyError("M-Pesa amounts are whole shillings")
        value = whole
    return scale_units(integer_units(value), from_exponent=0, to_exponent=exponent(CURRENCY), currency=CURRENCY)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class C2BPayment(_Model):
    """A validation or confirmation request (the same fields)."""

    TransactionType: str = ""
    TransID: Identifier
    TransTime: str = ""
    TransAmount: Any
    BusinessShortCode: Identifier
    BillRefNumber: str = Field(default="", max_length=128)
    MSISDN: str = ""
    FirstName: str = ""
    MiddleName: str = ""
    LastName: str = ""

    @field_validator("TransAmount")
    @classmethod
    def _amount(cls, value: Any) -> int:
        minor = minor_or_error(lambda v, c: shillings_to_minor(v), value, CURRENCY)
        if minor <= 0:
            raise ValueError("amount must be greater than zero")
        return minor

    @property
    def account_number(self) -> str:
        return self.BillRefNumber.strip()

    @property
    def payer(self) -> dict[str, str]:
        name = " ".join(part for part in (self.FirstName, self.MiddleName, self.LastName) if part.strip())
        payer = {"phone": self.MSISDN.strip()[:32]} if self.MSISDN.strip() else {}
        if name:
            payer["name"] = name[:200]
        return payer


def is_c2b_payload(payload: dict[str, Any]) -> bool:
    return "TransID" in payload and "BusinessShortCode" in payload


def c2b_confirmation_event(payment: C2BPayment, payload: dict[str, Any]) -> NormalizedEvent:
    """What a confirmation claims: a payment of ``TransAmount`` to the account number. Unsigned,
    so ``requires_confirmation``: the worker asks Transaction Status before it counts."""
    return NormalizedEvent(
        event_id=f"c2b:{payment.TransID}",
        event_type=EVENT_TYPE,
        status=S.SUCCEEDED,
        external_txn_id=payment.TransID,
        amount_minor=payment.TransAmount,
        currency=CURRENCY,
        provider_student_id=payment.account_number,
        payer=payment.payer,
        requires_confirmation=True,
        raw=payload,
    )


class StatusParameter(_Model):
    Key: str
    Value: Any = None


class StatusParameters(_Model):
    ResultParameter: list[StatusParameter] | StatusParameter

    def as_dict(self) -> dict[str, Any]:
        items = self.ResultParameter if isinstance(self.ResultParameter, list) else [self.ResultParameter]
        return {item.Key: item.Value for item in items}


class StatusResult(_Model):
    ResultType: StrictInt | str = 0
    ResultCode: StrictInt | str
    ResultDesc: str = ""
    OriginatorConversationID: str = ""
    ConversationID: str = ""
    TransactionID: str = ""
    ResultParameters: StatusParameters | None = None


class StatusResultEnvelope(_Model):
    Result: StatusResult


def status_from_result(result: StatusResult) -> tuple[str, NormalizedStatus | None]:
    """(the receipt the answer is about, what it says), or (receipt, None) when it settles
    nothing (Daraja could not answer now: the janitor asks again)."""
    params = result.ResultParameters.as_dict() if result.ResultParameters else {}
    receipt = str(params.get("ReceiptNo") or "").strip()
    if str(result.ResultCode) != "0":
        return receipt, None
    state = str(params.get("TransactionStatus") or "").strip().lower()
    detail = f"Transaction Status: {params.get('TransactionStatus') or result.ResultDesc}"[:200]
    if state == COMPLETED:
        try:
            amount = shillings_to_minor(params.get("Amount"))
        except (MoneyError, TypeError, ValueError):
            return receipt, None
        return receipt, NormalizedStatus(status=S.SUCCEEDED, external_txn_id=receipt, amount_minor=amount,
                                         currency=CURRENCY, detail=detail)  # fmt: skip
    if state in NOT_PAID:
        return receipt, NormalizedStatus(status=S.FAILED, external_txn_id=receipt, currency=CURRENCY, detail=detail)
    return receipt, None


class C2BCredentials(_Model):
    """What C2B needs beside the STK credentials: the paybill (or till) Daraja calls us for and,
    for Transaction Status, the API initiator of that shortcode and its security credential."""

    paybill_number: str = Field(pattern=r"^\d{5,7}$")
    kind: Literal["paybill", "till"] = "paybill"
    initiator_name: str = Field(min_length=1)
    security_credential: str = Field(min_length=1)
