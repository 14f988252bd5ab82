"""The provider interface: one small class per provider, looked up through ``registry``.

An adapter only says what is special about its provider: how a webhook is signed, what its
payload looks like, how to start a payment and how to ask for its status. JSON decoding, HMAC
comparison in constant time, validation-error formatting, HTTP timeouts and error mapping live
here, once.
"""

from __future__ import annotations

import base64
import functools
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import pydantic
from django.conf import settings

from core.money import CURRENCY_EXPONENTS, MAX_MINOR_AMOUNT
from core.status import PaymentStatus
from providers.errors import (
    OperationNotSupported,
    PayloadInvalid,
    PayloadMalformed,
    ProviderRejected,
    ProviderUnavailable,
    SignatureInvalid,
    SignatureMissing,
)
from providers.json_limits import JsonRefused, loads_limited

if TYPE_CHECKING:
    from payments.models import Payment, ProviderAccount


@dataclass(frozen=True)
class RefundReport:
    """One refund as a provider reports it. ``key`` is the provider's id for the refund, the same
    in every event that mentions it; "" for providers that have none (the event then keys it)."""

    key: str
    amount_minor: int
    status: str = "succeeded"  # payments.ledger.RefundStatus: pending, succeeded, failed


@dataclass(frozen=True)
class DisputeReport:
    """One dispute (chargeback) of the payment, keyed by the provider's id for it."""

    key: str
    amount_minor: int
    status: str  # payments.ledger.DisputeStatus: open, won, lost


@dataclass(frozen=True)
class NormalizedEvent:
    """One provider notification in our own terms. Only this type travels inward.

    An event reports facts about one transaction (``payments.ledger``): its outcome
    (``status``), refunds, a cumulative refunded total, disputes. Any of them may be absent; an
    event that reports none concerns no payment.
    """

    event_id: str
    event_type: str
    # The outcome of the charge the event reports; None when it reports no outcome (a refund
    # notice, or an event that concerns no payment). Never a refund state: refunds are below.
    status: PaymentStatus | None
    external_txn_id: str = ""
    # The charge's amount; with ``status`` succeeded, the amount received.
    amount_minor: int = 0
    currency: str = ""
    # The transaction's merchant reference: ours when we started the payment and the provider
    # echoes it, else the provider's own (Paystack's reference of a payment made elsewhere).
    reference: str = ""
    # The provider's id of the checkout we started (``Payment.provider_checkout_id``).
    checkout_id: str = ""
    # The charge within the transaction, where the provider has one apart from the transaction
    # (a Stripe charge of a PaymentIntent): refunds and disputes may name only it.
    charge_id: str = ""
    provider_student_id: str = ""
    payer: Mapping[str, Any] = field(default_factory=dict)
    refunds: tuple[RefundReport, ...] = ()
    # The cumulative refunded total at the time of the event, when the provider reports one.
    refunded_total_minor: int | None = None
    disputes: tuple[DisputeReport, ...] = ()
    # When the provider says this happened, if it says.
    occurred_at: datetime | None = None
    # True when the body is not bound to a secret (unsigned, or a signature that does not cover
    # the body): its claims are only believed after ``fetch_status`` confirms them.
    requires_confirmation: bool = False
    # Why a genuine event is not acted on (a payout, a customer update, the other mode): kept
    # with it and told the provider in a 2xx, so it stops retrying.
    ignored_reason: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.concerns_payment and not self.ignored_reason:
            reason = f"{self.event_type or 'this event'} is not about a payment, a refund or a dispute"
            object.__setattr__(self, "ignored_reason", reason)

    @property
    def reports_money(self) -> bool:
        return self.status is not None or bool(self.refunds or self.disputes) or self.refunded_total_minor is not None

    @property
    def concerns_payment(self) -> bool:
        # An unconfirmed claim still names its transaction: the worker asks the provider about it.
        has_ids = bool(self.external_txn_id or self.reference or self.checkout_id or self.charge_id)
        return self.reports_money and (has_ids or not self.requires_confirmation)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("raw")
        data["status"] = str(self.status) if self.status else None
        data["occurred_at"] = self.occurred_at.isoformat() if self.occurred_at else None
        return data


@dataclass(frozen=True)
class NormalizedStatus:
    """What the provider's API says about a payment right now: the charge's outcome and, once it
    succeeded, what has been refunded (a total, and the refunds one by one where the API lists
    them)."""

    status: PaymentStatus
    external_txn_id: str = ""
    amount_minor: int | None = None
    currency: str = ""
    refunded_total_minor: int | None = None
    refunds: tuple[RefundReport, ...] = ()
    disputes: tuple[DisputeReport, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class CheckoutResult:
    """Where to send the parent, or the on-phone prompt that was sent instead.

    Adapters do not write to the database: the caller saves ``checkout_id`` as
    ``Payment.provider_checkout_id``, a known ``external_txn_id``, and merges ``provider_data``
    into ``Payment.provider_data``.
    """

    redirect_url: str = ""
    checkout_id: str = ""
    external_txn_id: str = ""
    prompt_sent: bool = False
    message: str = ""
    provider_data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReturnUrls:
    """Absolute URLs given to the provider when a checkout starts."""

    success_url: str  # where the payer lands after paying: our thanks page
    cancel_url: str  # where the payer lands after giving up: the pay page
    callback_url: str = ""  # our webhook URL for this school and provider


@dataclass(frozen=True)
class RefundResult:
    """What the provider answered about one refund: its own id for it (the key its webhooks and
    API name it by), its state (``payments.ledger.RefundStatus``: pending, succeeded or failed)
    and the amount it refunds, in ISO minor units. ``detail`` is the provider's wording, for
    staff."""

    refund_id: str
    status: str
    amount_minor: int
    detail: str = ""


class ProviderAdapter:
    """Base class of every provider adapter. Subclasses set the class attributes and implement
    ``verify_signature`` and ``parse``; the payment-API methods where the provider has them.

    The attributes below are everything the rest of the service reads from an adapter besides
    its methods: each is declared here, with its default and what it means, and a provider sets
    the ones where it differs. Three follow from the methods an adapter implements
    (``checkout_enabled``, ``refund_available``, ``refund_status_available``), so they cannot
    disagree with them. ``tests/providers/test_packages.py`` checks every registered adapter's."""

    slug: ClassVar[str]
    display_name: ClassVar[str]

    # --- Webhooks: how a delivery is authenticated ------------------------------------------
    # Shown to staff as "how this delivery was authenticated".
    verification_method: ClassVar[str] = ""
    # The request header that carries the webhook's signature (or what stands in for one),
    # named in the answer to a delivery without it; "" when the provider signs nothing (M-Pesa:
    # the proof is a token in the callback URL).
    signature_header: ClassVar[str] = ""
    # Request headers (lower-case names) whose value is a secret or stands in for one, such as
    # Flutterwave's verif-hash, which is the secret hash itself: never stored with an event, and
    # masked where an older stored event still has them. A signature over the body is no secret.
    secret_headers: ClassVar[frozenset[str]] = frozenset()
    # True when the provider signs its webhooks with the account's secret API key instead of a
    # secret of its own (Paystack): the account's webhook secret and API key are then the same
    # value, set together when the account is created or rotated (``payments.services``).
    signs_with_api_key: ClassVar[bool] = False
    # True when the provider's payment callbacks are not proof enough by themselves (unsigned, a
    # signature that does not cover the body, or a signing scheme we could not confirm): its
    # ``parse`` marks those events ``requires_confirmation``, and the worker believes them only
    # once ``fetch_status`` has confirmed them from the provider's API (which it must implement).
    needs_confirmation: ClassVar[bool] = False
    # True when ``verify_signature`` asks the provider's API if a delivery is genuine (PayPal):
    # the one outbound call allowed on the request path; no answer is a 401, and PayPal resends.
    verifies_with_api: ClassVar[bool] = False

    # --- Checkout (and ``checkout_enabled`` below) ---------------------------------------------
    # True when the checkout is a prompt on the payer's phone (M-Pesa's STK push): the pay page
    # and the REST checkout ask for the number first.
    checkout_requires_phone: ClassVar[bool] = False
    # True when the provider's checkout refuses a payer without an email address (Paystack's and
    # Flutterwave's initialize APIs): the pay page and the REST checkout then ask for one.
    checkout_requires_email: ClassVar[bool] = False

    # --- Refunds (and ``refund_available``, ``refund_status_available`` below) -------------------
    # True when sending ``refund`` again with the same idempotency key is documented to return
    # the first refund instead of making a second one (Stripe's Idempotency-Key): a refund whose
    # answer was lost may then be sent again by itself. Elsewhere staff check first.
    refund_idempotent: ClassVar[bool] = False
    # How long the provider remembers an idempotency key (Stripe: 24 hours).
    refund_idempotency_window_seconds: ClassVar[int] = 0
    # True when the provider's refund webhooks name the refund by the id ``refund`` returned, so
    # both reports land on one ledger key. Paystack's and Chapa's carry no refund id: their
    # reports are matched to our refund requests by amount (``payments.services``).
    refund_events_name_the_refund: ClassVar[bool] = True

    # --- The provider's API --------------------------------------------------------------------
    # Name of the setting holding the provider API's base URL (the real host by default).
    api_base_url_setting: ClassVar[str | None] = None
    # Seconds before a call to the provider's API gives up (``ProviderUnavailable``: retry later).
    api_timeout_seconds: ClassVar[float] = 10.0
    # A substring that marks the provider's test keys (``"sk_test_"``); "" when keys do not say.
    # A test-mode account must hold a test key and a live account a live one (``secret_api_key``).
    test_key_marker: ClassVar[str] = ""

    # --- Capabilities that follow from the methods implemented ----------------------------------

    @property
    def checkout_enabled(self) -> bool:
        """True when parents may be offered this provider's checkout: the adapter implements
        ``create_checkout``. An adapter may also switch it off (the dummy's follows
        ``DUMMY_CHECKOUT_ENABLED``, off in production: its checkout takes no money)."""
        return self._implements("create_checkout")

    @property
    def refund_available(self) -> bool:
        """True when the provider has a refund API we call (the adapter implements ``refund``):
        staff refunds go through it. Elsewhere staff make the refund at the provider and record
        it by hand."""
        return self._implements("refund")

    @property
    def refund_status_available(self) -> bool:
        """True when the provider's API can be asked where one refund stands (``refund_status``)."""
        return self._implements("refund_status")

    def _implements(self, method: str) -> bool:
        return getattr(type(self), method) is not getattr(ProviderAdapter, method)

    # --- Webhooks ----------------------------------------------------------------------------

    def verify_and_parse(
        self,
        *,
        body: bytes,
        headers: Mapping[str, str],
        account: ProviderAccount,
        query: Mapping[str, str] | None = None,
    ) -> NormalizedEvent:
        """Check the signature over the raw bytes, then decode and validate.

        ``query`` is the callback URL's query string, for providers whose only proof is a
        token we put in the callback URL. Raises ``SignatureMissing`` / ``SignatureInvalid``
        (nothing may be stored), ``PayloadMalformed`` (not JSON) or ``PayloadInvalid`` (a field
        is wrong). Runs on the request path: no outbound HTTP call.
        """
        self.verify_signature(body=body, headers=headers, account=account, query=query or {})
        return self.parse_body(body=body, headers=headers, account=account)

    def parse_body(self, *, body: bytes, headers: Mapping[str, str], account: ProviderAccount) -> NormalizedEvent:
        """Decode (with limits), ``parse``, then check the event fits where it will be stored.

        The one way a body becomes an event: on receipt, in the worker and on replay, so an
        event accepted once is accepted again, and a 202 never turns into a failure.
        """
        return normalized_event_check(self.parse(payload=self.decode_json(body), headers=headers, account=account))

    def verify_signature(
        self, *, body: bytes, headers: Mapping[str, str], account: ProviderAccount, query: Mapping[str, str]
    ) -> None:
        raise NotImplementedError

    def parse(
        self, *, payload: dict[str, Any], headers: Mapping[str, str], account: ProviderAccount
    ) -> NormalizedEvent:
        raise NotImplementedError

    # --- Payment API -------------------------------------------------------------------------

    def create_checkout(self, *, payment: Payment, return_urls: ReturnUrls) -> CheckoutResult:
        """Ask the provider to start collecting ``payment``; return where to send the payer."""
        raise OperationNotSupported()

    def fetch_status(self, *, payment: Payment) -> NormalizedStatus:
        """Ask the provider's API for the payment's current state. Used to confirm an event
        with ``requires_confirmation`` before it may move money, and by the janitor that
        re-checks payments whose webhook never came."""
        raise OperationNotSupported()

    def refund(self, *, payment: Payment, amount_minor: int, idempotency_key: str, reason: str = "") -> RefundResult:
        """Ask the provider to give ``amount_minor`` of ``payment`` back to the payer. The same
        ``idempotency_key`` is sent every time this refund is asked for, in whatever form the
        provider accepts one. Raises ``ProviderRejected`` when the provider refuses (nothing was
        refunded) and ``ProviderUnavailable`` when its answer did not arrive (a refund may or may
        not have been made). Providers without a refund API do not implement it: staff record
        those refunds by hand."""
        raise OperationNotSupported()

    def refund_status(self, *, payment: Payment, refund_id: str) -> RefundResult:
        """Ask the provider's API where the refund ``refund_id`` stands now."""
        raise OperationNotSupported()

    # --- Shared helpers ----------------------------------------------------------------------

    @staticmethod
    def decode_json(body: bytes) -> dict[str, Any]:
        # Within the limits of json_limits (depth, number sizes, NUL, UTF-8); numbers with a
        # fraction become Decimal, never float, so amounts stay exact.
        try:
            payload = loads_limited(body)
        except JsonRefused as exc:
            raise PayloadMalformed(f"Malformed JSON body: {exc}") from exc
        if not isinstance(payload, dict):
            raise PayloadMalformed("Malformed JSON body: expected a JSON object")
        return payload

    @staticmethod
    def validate(model: type[pydantic.BaseModel], payload: dict[str, Any], *, event_type: str = ""):
        """Validate ``payload`` with ``model``; a failure becomes ``PayloadInvalid`` with one
        ``{"field", "message"}`` per problem."""
        try:
            return model.model_validate(payload)
        except pydantic.ValidationError as exc:
            raise PayloadInvalid(field_errors(exc), event_type=event_type) from exc

    def api_base_url(self, account: ProviderAccount | None = None) -> str:
        if not self.api_base_url_setting:
            raise OperationNotSupported()
        return getattr(settings, self.api_base_url_setting).rstrip("/")

    def secret_api_key(self, account: ProviderAccount) -> str:
        """The account's secret API key, refused when it does not match the account's mode: a
        test-mode account must never move real money, nor a live one silently take test money."""
        key = (account.api_key or "").strip()
        if not key:
            raise ProviderRejected(f"The {self.display_name} account has no API key")
        if self.test_key_marker:
            is_test_key = self.test_key_marker in key
            if account.test_mode and not is_test_key:
                raise ProviderRejected(
                    f"The {self.display_name} account is in test mode but its API key is not a test key"
                )
            if not account.test_mode and is_test_key:
                raise ProviderRejected(f"The {self.display_name} account is live but its API key is a test key")
        return key

    def http_client(self, **kwargs) -> httpx.Client:
        """An httpx client with this provider's timeout. Every outbound call goes through one."""
        return httpx.Client(timeout=httpx.Timeout(self.api_timeout_seconds), **kwargs)

    def request_json(self, client: httpx.Client, method: str, url: str, **kwargs) -> dict[str, Any]:
        """Send one API request and return its JSON body.

        Network errors, timeouts, 429 and 5xx raise ``ProviderUnavailable`` (retry later);
        other 4xx raise ``ProviderRejected`` with the provider's message.
        """
        try:
            response = client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(f"{self.display_name} timed out") from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"{self.display_name} unreachable: {type(exc).__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise ProviderUnavailable(f"{self.display_name} answered HTTP {response.status_code}")
        try:
            data = response.json(parse_float=Decimal)
        except ValueError as exc:
            raise ProviderUnavailable(
                f"{self.display_name} answered HTTP {response.status_code} without JSON"
            ) from exc
        if response.status_code >= 400:
            raise ProviderRejected(
                f"{self.display_name} refused the request (HTTP {response.status_code}): "
                f"{_provider_message(data)}"
            )
        if not isinstance(data, dict):
            raise ProviderUnavailable(f"{self.display_name} answered with unexpected JSON")
        return data


class HmacHeaderAdapter(ProviderAdapter):
    """A provider that signs each webhook with one header: an HMAC of the raw body keyed with the
    account's webhook secret (SurePay, Paystack, Chapa, the dummy). A subclass names the header
    and says how the HMAC is made; the check is written here, once. Every secret the account
    holds is tried (the current one and, during a rotation, the previous one), each compared
    with ``hmac.compare_digest`` so timing reveals nothing about the expected value."""

    signature_header: ClassVar[str]
    # The hash function, by ``hashlib``'s name: "sha256", "sha512".
    hmac_algorithm: ClassVar[str] = "sha256"
    # How the header writes the HMAC: "hex" (either case) or "base64".
    hmac_encoding: ClassVar[str] = "hex"
    # What comes before the HMAC in the header (the dummy's ``sha256=``); "" for nothing.
    signature_prefix: ClassVar[str] = ""

    def verify_signature(
        self, *, body: bytes, headers: Mapping[str, str], account: ProviderAccount, query: Mapping[str, str]
    ) -> None:
        header = headers.get(self.signature_header, "")
        if not header:
            raise SignatureMissing(f"Missing {self.signature_header} header")
        if not header.startswith(self.signature_prefix) or not self.hmac_matches(
            secrets=account.webhook_secrets(), message=body, signature=header.removeprefix(self.signature_prefix)
        ):
            raise SignatureInvalid(f"{self.signature_header} does not match the body")

    def hmac_matches(self, *, secrets: Iterable[str], message: bytes, signature: str) -> bool:
        """True when ``signature`` is the HMAC of ``message`` under any of ``secrets``."""
        provided = signature.strip()
        if self.hmac_encoding == "hex":
            provided = provided.lower()
        provided_bytes = provided.encode("ascii", "replace")
        matched = False
        for secret in secrets:
            digest = hmac.new(secret.encode("utf-8"), message, self.hmac_algorithm)
            expected = digest.hexdigest() if self.hmac_encoding == "hex" else base64.b64encode(digest.digest()).decode()
            matched |= hmac.compare_digest(expected.encode("ascii"), provided_bytes)
        return matched


# --- What an accepted event must satisfy -----------------------------------------------------------

# Where each text field of NormalizedEvent is stored: its length limit is that column's, read from
# the model, so the two cannot drift apart. A test checks that every text field is listed here.
STORED_TEXT_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "event_id": (("WebhookEvent", "external_event_id"),),
    "event_type": (("WebhookEvent", "event_type"),),
    "external_txn_id": (("Payment", "external_txn_id"), ("TransactionFact", "txn_id")),
    "currency": (("Payment", "currency"),),
    # Ours is found in Payment.reference; the provider's own is kept in these.
    "reference": (("Payment", "provider_reference"), ("TransactionFact", "reference")),
    "checkout_id": (("Payment", "provider_checkout_id"),),
    "charge_id": (("Payment", "provider_charge_id"),),
    "ignored_reason": (("WebhookEvent", "result"),),
    "provider_student_id": (("Payment", "provider_student_id"), ("ProviderStudentLink", "provider_student_id")),
}
AMOUNT_FIELDS = ("amount_minor", "refunded_total_minor")
# Refunds and disputes become ledger facts, keyed by the provider's id for them.
REPORT_STATES = {"refunds": ("pending", "succeeded", "failed"), "disputes": ("open", "won", "lost")}
REPORTS_MAX = 100
# The payer's details are kept in a JSON column (Payment.payer): a few short scalars.
PAYER_MAX_ITEMS = 10
PAYER_KEY_MAX_CHARS = 32
PAYER_VALUE_MAX_CHARS = 254  # the longest valid e-mail address


@functools.cache
def stored_text_limits() -> dict[str, int]:
    """NormalizedEvent text field -> the most characters every column it goes to can hold."""
    from django.apps import apps

    return {
        name: min(apps.get_model("payments", model)._meta.get_field(column).max_length for model, column in columns)
        for name, columns in STORED_TEXT_FIELDS.items()
    }


def storable_text_problem(value: Any, max_chars: int) -> str | None:
    """Why ``value`` cannot be stored in a text column of ``max_chars``, or None.

    PostgreSQL refuses NUL in text, and a lone surrogate cannot be encoded as UTF-8.
    """
    if not isinstance(value, str):
        return f"must be text, got {type(value).__name__}"
    if len(value) > max_chars:
        return f"is longer than {max_chars} characters"
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone UTF-16 surrogate"
    return None


def storable_text(value: Any, max_chars: int) -> str:
    """``value`` made storable, for what is kept only to be read by staff (a dead letter's type
    and errors): NUL and lone surrogates become U+FFFD, the end is cut."""
    text = value if isinstance(value, str) else str(value)
    text = text[:max_chars].replace("\x00", "\ufffd")
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def normalized_event_check(event: NormalizedEvent) -> NormalizedEvent:
    """Return ``event`` if everything the worker will store from it fits its column; else raise
    ``PayloadInvalid`` naming each field (the request is then answered 400 and kept as a dead
    letter). Runs after every adapter's ``parse``: adapters need not repeat these limits."""
    errors: list[dict[str, str]] = []
    for name, limit in stored_text_limits().items():
        problem = storable_text_problem(getattr(event, name), limit)
        if problem:
            errors.append({"field": name, "message": f"{name} {problem}"})
    if not errors and not event.event_id.strip():
        errors.append({"field": "event_id", "message": "event_id must not be empty"})
    if event.currency and event.currency not in CURRENCY_EXPONENTS:
        errors.append({"field": "currency", "message": f"unknown currency {event.currency!r}"})
    for name in AMOUNT_FIELDS:
        amount = getattr(event, name)
        if amount is None and name != "amount_minor":
            continue
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_MINOR_AMOUNT:
            errors.append({"field": name, "message": f"{name} must be a whole number from 0 to {MAX_MINOR_AMOUNT}"})
    if event.status is not None and not isinstance(event.status, PaymentStatus):
        errors.append({"field": "status", "message": "status is not a payment status"})
    errors.extend(_report_errors(event))
    errors.extend(_payer_errors(event.payer))
    if errors:
        event_type = storable_text(event.event_type, stored_text_limits()["event_type"])
        raise PayloadInvalid(errors, event_type=event_type)
    return event


def _report_errors(event: NormalizedEvent) -> list[dict[str, str]]:
    """Refunds and disputes: each key fits the fact's column, each amount is plausible."""
    from django.apps import apps

    key_limit = apps.get_model("payments", "TransactionFact")._meta.get_field("key").max_length
    errors = []
    for name, states in REPORT_STATES.items():
        reports = getattr(event, name)
        if len(reports) > REPORTS_MAX:
            errors.append({"field": name, "message": f"at most {REPORTS_MAX} {name}"})
            continue
        for report in reports:
            # A report without a key of its own is keyed by the event ("event:<event id>").
            problem = storable_text_problem(report.key or f"event:{event.event_id}", key_limit)
            if problem:
                errors.append({"field": name, "message": f"{name} key {problem}"})
            amount = report.amount_minor
            if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_MINOR_AMOUNT:
                errors.append({"field": name, "message": f"{name} amount must be a whole number from 0 to {MAX_MINOR_AMOUNT}"})
            if report.status not in states:
                errors.append({"field": name, "message": f"{name} status must be one of {', '.join(states)}"})
    return errors


def _payer_errors(payer: Any) -> list[dict[str, str]]:
    if not isinstance(payer, Mapping) or len(payer) > PAYER_MAX_ITEMS:
        return [{"field": "payer", "message": f"payer must be at most {PAYER_MAX_ITEMS} details"}]
    errors = []
    for key, value in payer.items():
        problem = storable_text_problem(key, PAYER_KEY_MAX_CHARS)
        if problem is None and not (value is None or isinstance(value, (bool, int))):
            problem = storable_text_problem(value, PAYER_VALUE_MAX_CHARS)
        if problem:
            errors.append({"field": "payer", "message": f"payer detail {problem}"})
    return errors


def field_errors(exc: pydantic.ValidationError) -> list[dict[str, str]]:
    errors = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in error["loc"]) or "(body)"
        message = error["msg"]
        # pydantic prefixes messages from our own validators with "Value error, ".
        message = message.removeprefix("Value error, ")
        errors.append({"field": location, "message": message})
    return errors


def _provider_message(data: Any) -> str:
    if isinstance(data, dict):
        for key in ("message", "error_description", "error", "detail", "errorMessage"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value[:300]
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return value["message"][:300]
    return "no message"
