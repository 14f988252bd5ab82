"""Reads of the payments domain."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Q, QuerySet, Sum
from django.urls import reverse

from core.money import format_minor
from core.status import PaymentStatus
from payments.contact import ContactInvalid, parent_phone_international
from payments.ledger import REFUND_RANK, FactKind, Ledger, RefundStatus, ledger_fold
from payments.models import (
    AuditLog,
    Payment,
    PaymentMethod,
    PaymentReceipt,
    PaymentRequest,
    ProviderAccount,
    ProviderStudentLink,
    RefundRequest,
    School,
    Student,
    TransactionFact,
    WebhookEvent,
)
from providers.base import ProviderAdapter
from providers.errors import ProviderRejected, UnknownProvider
from providers.registry import get_provider


def account_webhook_url(*, account: ProviderAccount) -> str:
    """The webhook URL to give the provider: the school in the path, since most providers
    cannot send our X-School-Code header."""
    path = reverse("webhook-receive-school", kwargs={"provider": account.provider, "school_code": account.school.code})
    return settings.PUBLIC_BASE_URL + path


def account_api_key_problem(*, account: ProviderAccount) -> str:
    """Why the account's API key would be refused by its provider's adapter (a test key on a
    live account, or the reverse), or "" when it is fine or there is no key to check."""
    if not account.api_key:
        return ""
    try:
        get_provider(account.provider).secret_api_key(account)
    except (UnknownProvider, ProviderRejected) as exc:
        return str(exc)
    return ""


def known_student(*, school_id: int, provider: str, provider_student_id: str) -> Student | None:
    """The school's student a provider's student id was mapped to before (the known mappings,
    ``ProviderStudentLink``), or None. One look-up by the link's unique key."""
    link = (
        ProviderStudentLink.objects.select_related("student")
        .filter(school_id=school_id, provider=provider, provider_student_id=provider_student_id)
        .first()
    )
    return link.student if link is not None else None


def payment_ledger(*, payment: Payment, facts: list[TransactionFact] | None = None) -> Ledger:
    """The payment's ledger folded from its facts (``payments.ledger``): its money movements,
    for the books and for staff. ``facts``: all of them, when the caller already holds them."""
    return ledger_fold(
        facts
        if facts is not None
        else TransactionFact.objects.filter(payment=payment).only(
            "kind", "key", "status", "amount_minor", "currency", "occurred_at", "source"
        ),
        initial_status=PaymentStatus.AWAITING_REVIEW if payment.is_manual else PaymentStatus.PENDING,
        currency=payment.currency,
    )


# --- Staff scope ---------------------------------------------------------------------------------


def schools_for_user(*, user) -> QuerySet[School]:
    """The schools a staff user may see and touch: every school for a superuser, else those of
    their ``StaffMembership`` rows. The one scoping rule (REST API; admin reuses it)."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return School.objects.none()
    if user.is_superuser:
        return School.objects.all()
    return School.objects.filter(staff_memberships__user=user)


def user_schools_q(*, user, school_path: str = "school") -> Q:
    """The condition keeping rows to the user's schools (``school_path``: the look-up from the
    row to its school; "" for School itself). Nothing for a superuser; for staff the ids of their
    schools, read first: with the one school of most staff the database then sees
    ``school_id = 5`` and reads a list in order from its (school, ...) index, where behind a
    subquery it sorts every row of the school for each page."""
    if getattr(user, "is_superuser", False) and user.is_active:
        return Q()
    school_ids = list(schools_for_user(user=user).order_by().values_list("pk", flat=True))
    return Q(**{f"{school_path}__in" if school_path else "pk__in": school_ids})


def staff_time_zone(*, user) -> str | None:
    """The one time zone of all the user's schools, or None when they have none or several."""
    zones = list(schools_for_user(user=user).order_by().values_list("time_zone", flat=True).distinct()[:2])
    return zones[0] if len(zones) == 1 else None


def staff_single_school(*, user) -> School | None:
    """The user's school when they have exactly one: forms then choose it for them."""
    schools = list(schools_for_user(user=user)[:2])
    return schools[0] if len(schools) == 1 else None


def user_can_access_school(*, user, school_id: int) -> bool:
    return schools_for_user(user=user).filter(pk=school_id).exists()


def payment_requests_for_user(*, user) -> QuerySet[PaymentRequest]:
    return PaymentRequest.objects.filter(user_schools_q(user=user)).select_related("school", "student")


def payments_for_user(*, user) -> QuerySet[Payment]:
    return Payment.objects.filter(user_schools_q(user=user)).select_related("school", "student")


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    actor: str
    what: str
    details: dict


# The service's own actors, as staff read them.
SYSTEM_ACTORS = {
    "directory": "School Directory",
    "quickbooks": "QuickBooks sync",
    "janitor": "Status check",
    "ledger": "Ledger",
    "cli": "Command line",
}


def _actor_words(entry: AuditLog, payment: Payment) -> str:
    if entry.actor_type == AuditLog.ActorType.PROVIDER:
        return provider_display_name(entry.actor or payment.provider)
    if entry.actor_type == AuditLog.ActorType.SYSTEM:
        return SYSTEM_ACTORS.get(entry.actor, "The service")
    return f"{entry.get_actor_type_display()} {entry.actor}".strip()


def payment_timeline(*, payment: Payment) -> list[TimelineEntry]:
    """What happened to a payment, oldest first: its audit log (created, checkout, webhooks
    applied, mapped, reviewed, synced to QuickBooks...) and each provider event received for it
    (the events that changed nothing, duplicates and late ones included, are shown too)."""
    entries = [
        TimelineEntry(
            at=entry.created_at,
            actor=_actor_words(entry, payment),
            what=entry.action,
            details=entry.details,
        )
        for entry in AuditLog.objects.filter(target_type="Payment", target_id=str(payment.pk))
    ]
    entries += [
        TimelineEntry(
            at=event.received_at,
            actor=provider_display_name(payment.provider),
            what=f"webhook received: {event.event_type or 'event'} {event.external_event_id or ''}".strip(),
            details={"event": event.pk, "event_type": event.event_type, "status": event.status, "result": event.result},
        )
        for event in WebhookEvent.objects.filter(payment=payment).only(
            "received_at", "event_type", "external_event_id", "status", "result"
        )
    ]
    return sorted(entries, key=lambda entry: entry.at)


# --- Parent pages ----------------------------------------------------------------------------------


def provider_supports_checkout(adapter: ProviderAdapter) -> bool:
    """Adapters without a checkout (aggregators that only push webhooks), or whose checkout is
    switched off (the dummy in production), are not offered: ``checkout_enabled``."""
    return bool(adapter.checkout_enabled)


def provider_display_name(slug: str) -> str:
    try:
        return get_provider(slug).display_name
    except UnknownProvider:  # a provider since removed from the registry
        return slug


def provider_needs_phone(adapter: ProviderAdapter) -> bool:
    """Whether the checkout is an on-phone prompt that needs the payer's number first (M-Pesa):
    the adapter says so with ``checkout_requires_phone``."""
    return bool(adapter.checkout_requires_phone)


def provider_needs_email(adapter: ProviderAdapter) -> bool:
    """Whether the provider's checkout refuses a payer without an email address (Paystack,
    Flutterwave): the adapter says so with ``checkout_requires_email``."""
    return bool(adapter.checkout_requires_email)


def provider_supports_refund(adapter: ProviderAdapter) -> bool:
    """Whether the provider has a refund API we call (``refund_available``); refunds of the
    others are made by hand."""
    return bool(adapter.refund_available)


def provider_reports_refunds(adapter: ProviderAdapter) -> bool:
    """Whether the provider's API can be asked where one refund stands (``refund_status_available``)."""
    return bool(adapter.refund_status_available)


@dataclass(frozen=True)
class CheckoutOption:
    slug: str
    display_name: str
    needs_phone: bool
    test_mode: bool
    needs_email: bool = False


def checkout_options(*, school: School) -> list[CheckoutOption]:
    """The ways a parent of ``school`` can pay online: its active provider accounts whose
    adapter can start a checkout."""
    options = []
    for account in ProviderAccount.objects.filter(school=school, active=True).order_by("provider"):
        try:
            adapter = get_provider(account.provider)
        except UnknownProvider:
            continue
        if provider_supports_checkout(adapter):
            options.append(
                CheckoutOption(
                    account.provider,
                    adapter.display_name,
                    provider_needs_phone(adapter),
                    account.test_mode,
                    provider_needs_email(adapter),
                )
            )
    return options


@dataclass(frozen=True)
class Paybill:
    """How to pay a school from the M-Pesa menu: its business number, the account number."""

    business_number: str
    account_number: str
    test_mode: bool


def paybill_for_request(*, payment_request: PaymentRequest) -> Paybill | None:
    """The school's M-Pesa paybill, when it has one set up and the request is in shillings: the
    account number is the student's number (``webhooks.c2b`` maps it back)."""
    if payment_request.currency != "KES":
        return None
    account = ProviderAccount.objects.filter(school_id=payment_request.school_id, provider="mpesa", active=True).first()
    credentials = (account.credentials or {}) if account else {}
    number = str(credentials.get("paybill_number") or "")
    if not number.isdigit() or credentials.get("kind", "paybill") != "paybill":
        return None
    return Paybill(number, payment_request.student.student_number, account.test_mode)


def payment_request_for_token(*, token: str) -> PaymentRequest | None:
    if not token or len(token) > 64:
        return None
    return PaymentRequest.objects.select_related("school", "student").filter(token=token).first()


@dataclass(frozen=True)
class Installments:
    """How a request may be paid: in parts or not, the smallest part, what was paid so far."""

    allowed: bool
    minimum_minor: int | None
    paid_minor: int
    amount_minor: int

    @property
    def balance_minor(self) -> int:
        return max(self.amount_minor - self.paid_minor, 0)

    @property
    def smallest_minor(self) -> int:
        """The least a parent may choose now: the minimum, or the whole balance when less is left."""
        if not self.allowed:
            return self.balance_minor
        return min(self.minimum_minor or 1, self.balance_minor)


def request_installments(*, payment_request: PaymentRequest) -> Installments:
    """The request's own setting wins over its school's; "paid so far" is the sum of what each
    settled payment counted toward it (``Payment.applied_minor``)."""
    school = payment_request.school
    allowed = payment_request.installments_allowed
    if allowed is None:
        allowed = school.installments_allowed
    minimum = payment_request.installment_min_minor
    if minimum is None and payment_request.currency == school.currency:
        minimum = school.installment_min_minor
    paid = payment_request.payments.aggregate(total=Sum("applied_minor"))["total"] or 0
    return Installments(bool(allowed), minimum, paid, payment_request.amount_minor)


@dataclass(frozen=True)
class PayPage:
    payment_request: PaymentRequest
    installments: Installments
    options: list[CheckoutOption]
    # A checkout already under way (shown as "continue" or "choose another way").
    in_flight: Payment | None
    # Manual payments the parent reported that staff have not reviewed yet.
    awaiting_review: list[Payment]


def pay_page(*, payment_request: PaymentRequest) -> PayPage:
    payments = payment_request.payments.order_by("-created_at")
    in_flight = payments.filter(
        method=PaymentMethod.PROVIDER,
        status__in=(PaymentStatus.PENDING, PaymentStatus.PROCESSING),
        checkout_created_at__isnull=False,
        checkout_error="",
    ).first()
    return PayPage(
        payment_request=payment_request,
        installments=request_installments(payment_request=payment_request),
        options=checkout_options(school=payment_request.school) if payment_request.school.active else [],
        in_flight=in_flight,
        awaiting_review=list(payments.filter(status=PaymentStatus.AWAITING_REVIEW)),
    )


def parent_page_language(*, token: str | None = None, payment_id=None) -> str:
    """The default language of a parent page: its school's."""
    school = None
    if token and len(token) <= 64:
        school = School.objects.filter(payment_requests__token=token).values_list("language", flat=True).first()
    elif payment_id:
        school = School.objects.filter(payments__pk=payment_id).values_list("language", flat=True).first()
    return school or "en"


def payment_for_parent(*, payment_id) -> Payment | None:
    """A payment by its id (a random UUID: the thanks page's link is as hard to guess as a pay link)."""
    return (
        Payment.objects.select_related("school", "payment_request", "payment_request__student")
        .filter(pk=payment_id)
        .first()
    )


# What the parent is told: one word for the thanks page and its JSON status endpoint.
PUBLIC_STATES = {
    PaymentStatus.PENDING: "processing",
    PaymentStatus.PROCESSING: "processing",
    PaymentStatus.AWAITING_REVIEW: "awaiting_review",
    PaymentStatus.SUCCEEDED: "paid",
    PaymentStatus.PARTIALLY_REFUNDED: "paid",
    PaymentStatus.REFUNDED: "refunded",
    PaymentStatus.FAILED: "failed",
    PaymentStatus.CANCELLED: "failed",
    PaymentStatus.EXPIRED: "failed",
}


def payment_public_state(*, payment: Payment) -> str:
    return PUBLIC_STATES.get(payment.status, "processing")


def payment_public_status(*, payment: Payment) -> dict:
    """The thanks page's JSON: nothing a stranger with the link could misuse."""
    payment_request = payment.payment_request
    return {
        "payment_id": str(payment.pk),
        "state": payment_public_state(payment=payment),
        "status": payment.status,
        "amount": payment.amount_display,
        "request_status": payment_request.status if payment_request else None,
    }


# --- Refunds -----------------------------------------------------------------------------------


# Requests whose money the ledger does not count yet, and which have not failed.
REFUND_ON_ITS_WAY = (RefundRequest.Status.REQUESTED, RefundRequest.Status.SUBMITTED, RefundRequest.Status.IN_DOUBT)


@dataclass(frozen=True)
class RefundBalance:
    """What of a payment can still be refunded, in its currency's minor units."""

    currency: str
    received_minor: int
    refunded_minor: int
    charged_back_minor: int
    # Refunds asked for and not failed that the ledger does not count yet: our requests still on
    # their way (or whose answer was lost), and pending refunds reported by the provider that no
    # request of ours stands for (made in its dashboard).
    on_the_way_minor: int

    @property
    def left_minor(self) -> int:
        return max(0, self.received_minor - self.refunded_minor - self.charged_back_minor - self.on_the_way_minor)


def payment_refund_balance(*, payment: Payment) -> RefundBalance:
    """Received, less refunded, charged back and refunds already asked for and not failed.
    Read with the payment row locked when a refund is about to be recorded."""
    received = payment.amount_minor if payment.settled_at is not None else 0
    requests = list(
        RefundRequest.objects.filter(payment=payment).values_list(
            "status", "amount_minor", "ledger_key", "provider_refund_id", "matched_keys"
        )
    )
    on_their_way = sum(amount for status, amount, *_ in requests if status in REFUND_ON_ITS_WAY)
    claimed = set()
    for _, _, ledger_key, provider_refund_id, matched_keys in requests:
        claimed |= {ledger_key, provider_refund_id, *matched_keys}
    latest: dict[str, tuple[str, int]] = {}
    for key, status, amount in TransactionFact.objects.filter(
        payment=payment, kind=FactKind.REFUND, amount_minor__isnull=False
    ).values_list("key", "status", "amount_minor"):
        if key not in latest or REFUND_RANK[status] > REFUND_RANK[latest[key][0]]:
            latest[key] = (status, amount)
    unclaimed_pending = sum(
        amount for key, (status, amount) in latest.items() if status == RefundStatus.PENDING and key not in claimed
    )
    return RefundBalance(
        currency=payment.currency,
        received_minor=received,
        refunded_minor=payment.refunded_amount_minor,
        charged_back_minor=payment.charged_back_amount_minor,
        on_the_way_minor=on_their_way + unclaimed_pending,
    )


def refund_requests_for_user(*, user) -> QuerySet[RefundRequest]:
    return RefundRequest.objects.filter(user_schools_q(user=user)).select_related("payment", "school")


# --- Receipts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptView:
    """What a receipt says, for its page and its PDF alike."""

    receipt: PaymentReceipt
    school_name: str
    number: str
    title: str  # "Payment received" or what became of the money since
    lines: list[tuple[str, str]]


def receipt_by_token(*, token: str) -> ReceiptView | None:
    """The receipt whose address holds ``token``, or None. Reads the payment as it is now, so a
    refund since is shown on the receipt."""
    if not token or len(token) > 64:
        return None
    receipt = (
        PaymentReceipt.objects.select_related("payment__school", "payment__student", "payment__payment_request__student")
        .filter(token=token)
        .first()
    )
    if receipt is None:
        return None
    payment = receipt.payment
    student = payment.student or (payment.payment_request.student if payment.payment_request else None)
    zone = zoneinfo.ZoneInfo(getattr(payment.school, "time_zone", "") or settings.TIME_ZONE)
    paid_at = (payment.settled_at or payment.created_at).astimezone(zone)
    if payment.is_manual:
        how = payment.get_method_display()
    else:
        how = provider_display_name(payment.provider)
    lines = [("Receipt number", receipt.number), ("Date paid", f"{paid_at:%d %B %Y, %H:%M} ({zone.key})")]
    if student is not None:
        lines.append(("Student", f"{student.full_name} ({student.student_number})".strip() if student.full_name else student.student_number))
    if payment.payment_request is not None:
        lines.append(("For", payment.payment_request.description))
    lines += [("Amount paid", payment.amount_display), ("Paid by", how)]
    reference = payment.manual_reference or payment.external_txn_id or payment.reference or ""
    if reference:
        lines.append(("Reference", reference))
    title = "Payment received"
    if payment.refunded_amount_minor:
        lines.append(("Refunded since", format_minor(payment.refunded_amount_minor, payment.currency)))
        title = "Payment received, refunded" if payment.status == PaymentStatus.REFUNDED else "Payment received, partly refunded"
    if payment.charged_back_amount_minor:
        lines.append(("Charged back", format_minor(payment.charged_back_amount_minor, payment.currency)))
        title = "Payment received, charged back"
    return ReceiptView(receipt, payment.school.name, receipt.number, title, lines)
@dataclass(frozen=True)
class ParentHistory:
    """What a parent sees of one school: the requests sent to their address, their children (the
    students of those requests), and every payment for those requests or children."""

    school: School
    requests: list[PaymentRequest]
    students: list
    payments: list[Payment]


def payment_requests_for_parent(*, school: School, contact: str) -> QuerySet[PaymentRequest]:
    """The school's requests sent to ``contact``: an email address, or a phone number in
    international form, whichever way staff typed it on the request (``0712 345 678``)."""
    if not contact.startswith("+"):
        return PaymentRequest.objects.filter(school=school, parent_email__iexact=contact)
    digits = contact[1:]
    matching = [
        pk
        for pk, phone in PaymentRequest.objects.filter(school=school)
        .exclude(parent_phone="")
        .values_list("pk", "parent_phone")
        .iterator()
        if _international_or_none(phone, school.currency) == "+" + digits
    ]
    return PaymentRequest.objects.filter(pk__in=matching)


def _international_or_none(phone: str, currency: str) -> str | None:
    try:
        return parent_phone_international(phone, currency=currency)
    except ContactInvalid:
        return None


def parent_history(*, school: School, contact: str) -> ParentHistory:
    requests = list(
        payment_requests_for_parent(school=school, contact=contact).select_related("student").order_by("-created_at")
    )
    student_ids = {request.student_id for request in requests}
    payments = list(
        Payment.objects.filter(school=school)
        .filter(Q(payment_request__in=[r.pk for r in requests]) | Q(student_id__in=student_ids))
        .select_related("student", "payment_request").order_by("-created_at")
    )  # fmt: skip
    students = sorted({request.student for request in requests}, key=lambda student: student.student_number)
    return ParentHistory(school, requests, students, payments)
