"""M-Pesa paybill (C2B): Daraja's validation and confirmation requests and the answers of the
Transaction Status queries that confirm them (providers/mpesa/c2b.py says how Daraja does it).

The security is the STK callbacks': a token per account in the URL path, the account's IP
allowlist, and no money moved by what Daraja posts until Transaction Status says the receipt is
completed. A confirmation is stored like any webhook (one ``WebhookEvent`` per receipt, so a
redelivery is a duplicate) and applied by the same worker: the payment is created ``processing``,
mapped to the student whose number was the account number, and the worker's confirmation asks
Transaction Status; its answer, posted to the result URL, settles the payment.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.db import IntegrityError, transaction
from django.db.models import Sum

from core.ip_allowlist import ip_allowlist_allows
from payments import services as payments_services
from payments.models import Payment, PaymentRequest, ProviderAccount, ProviderStudentLink, Student
from providers.errors import PayloadInvalid, PayloadMalformed, SignatureInvalid
from providers.mpesa import c2b
from providers.registry import get_provider
from webhooks import selectors
from webhooks import services as webhook_services
from webhooks.dead_letters import webhook_dead_letter_record

PROVIDER = "mpesa"


def c2b_account(*, school_code: str, token: str, remote_addr: str | None) -> ProviderAccount:
    """The M-Pesa account the URL's token belongs to. Raises ``AccountUnknown``,
    ``SignatureInvalid`` (a wrong token) or ``IpNotAllowed``."""
    account = None
    if webhook_services.school_code_plausible(school_code):
        account = selectors.account_for_webhook(provider=PROVIDER, school_code=school_code)
    if account is None:
        raise webhook_services.AccountUnknown()
    if account.ip_allowlist and not ip_allowlist_allows(account.ip_allowlist, remote_addr):
        raise webhook_services.IpNotAllowed(remote_addr)
    if not c2b.token_matches(account.webhook_secrets(), token, lambda secret: c2b.c2b_token(secret, account.pk)):
        raise SignatureInvalid("Wrong C2B URL token")
    return account


def student_for_account_number(*, school_id: int, account_number: str) -> Student | None:
    """The student whose number the payer typed (case and surrounding spaces do not matter)."""
    if not account_number or len(account_number) > 64:
        return None
    return Student.objects.filter(school_id=school_id, student_number__iexact=account_number).order_by("pk").first()


def amount_due_minor(*, student: Student, currency: str) -> int:
    """What the student's open payment requests in ``currency`` still ask for."""
    due = PaymentRequest.objects.filter(student=student, currency=currency, status=PaymentRequest.Status.OPEN)
    return due.aggregate(total=Sum("amount_minor"))["total"] or 0


def c2b_validate(*, account: ProviderAccount, body: bytes) -> tuple[str, str]:
    """Daraja's (ResultCode, ResultDesc) for a payment about to be made: accepted only to the
    school's paybill, for a known student number, in whole shillings up to M-Pesa's limit and,
    when the student has open requests, not more than they ask for."""
    adapter = get_provider(PROVIDER)
    try:
        payment = adapter.validate(c2b.C2BPayment, adapter.decode_json(body), event_type="c2b.validation")
        creds = adapter.c2b_credentials(account)
    except (PayloadMalformed, PayloadInvalid):
        return c2b.INVALID_AMOUNT if b"TransAmount" in body else c2b.OTHER_ERROR
    except Exception:  # an account not set up for paybills takes nothing
        return c2b.OTHER_ERROR
    if payment.BusinessShortCode != creds.paybill_number:
        return c2b.INVALID_SHORTCODE
    student = student_for_account_number(school_id=account.school_id, account_number=payment.account_number)
    if student is None:
        return c2b.INVALID_ACCOUNT
    if payment.TransAmount > c2b.MAX_SHILLINGS * 100:
        return c2b.INVALID_AMOUNT
    due = amount_due_minor(student=student, currency=c2b.CURRENCY)
    if due and payment.TransAmount > due:
        return c2b.INVALID_AMOUNT
    return c2b.ACCEPTED


def c2b_confirm(
    *, account: ProviderAccount, body: bytes, headers: Mapping[str, str], remote_addr: str | None
) -> webhook_services.WebhookReceipt:
    """Store a confirmation as a webhook event (the worker creates the payment and asks Transaction
    Status). The account number is linked to its student first, so the payment is mapped on
    arrival. Raises ``PayloadMalformed`` / ``PayloadInvalid`` (kept as a dead letter)."""
    adapter = get_provider(PROVIDER)
    try:
        payload = adapter.decode_json(body)
        if not c2b.is_c2b_payload(payload):
            raise PayloadInvalid([{"field": "TransID", "message": "Field required"}], event_type=c2b.EVENT_TYPE)
        event = adapter.parse_body(body=body, headers=headers, account=account)
    except (PayloadMalformed, PayloadInvalid) as exc:
        webhook_dead_letter_record(
            adapter=adapter, account=account, exc=exc, body=body, headers=headers, remote_addr=remote_addr
        )
        raise
    student = student_for_account_number(school_id=account.school_id, account_number=event.provider_student_id)
    if student is not None:
        c2b_student_link(account=account, account_number=event.provider_student_id, student=student)
    return webhook_services.webhook_event_store(
        adapter=adapter, account=account, event=event, body=body, headers=headers, remote_addr=remote_addr
    )


def c2b_student_link(*, account: ProviderAccount, account_number: str, student: Student) -> None:
    """Remember that this account number is this student (the mapping step reads it)."""
    try:
        with transaction.atomic():
            ProviderStudentLink.objects.get_or_create(
                school_id=account.school_id, provider=PROVIDER, provider_student_id=account_number,
                defaults={"student": student, "source": ProviderStudentLink.Source.ACCOUNT_NUMBER},
            )  # fmt: skip
    except IntegrityError:
        pass  # a racing confirmation made it


class ResultRefused(Exception):
    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


def c2b_status_result_apply(*, account: ProviderAccount, body: bytes, token: str) -> str:
    """Apply Daraja's answer to a Transaction Status query. The answer must name the receipt its
    URL's token was made for, and that receipt must be a payment of this account. Returns what
    changed; raises ``SignatureInvalid`` (a wrong token) or ``ResultRefused`` (not an answer we
    can use: 400)."""
    adapter = get_provider(PROVIDER)
    try:
        result = adapter.validate(c2b.StatusResultEnvelope, adapter.decode_json(body), event_type="c2b.status").Result
    except (PayloadMalformed, PayloadInvalid) as exc:
        raise ResultRefused(f"Not a Transaction Status result: {exc.detail}") from exc
    receipt, status = c2b.status_from_result(result)
    if not receipt:
        # Daraja could not look the receipt up (its answer names none): the janitor asks again.
        return f"no answer: {result.ResultDesc[:150]}"
    if not c2b.token_matches(account.webhook_secrets(), token, lambda secret: c2b.status_token(secret, receipt)):
        raise SignatureInvalid("Wrong result token for this receipt")
    payment = Payment.objects.filter(account=account, external_txn_id=receipt).first()
    if payment is None:
        raise ResultRefused(f"No paybill payment with receipt {receipt}")
    if status is None:
        return f"no change: {result.ResultDesc[:150]}"
    change = payments_services.payment_provider_status_apply(
        payment_id=payment.pk, status=status, source=f"transaction status {result.ConversationID}"[:120]
    )
    return change.note
