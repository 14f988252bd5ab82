"""Messages to parents: pay links staff send, reminders around the due date, and the
confirmation with a receipt after every settled payment.

Each message is a ``Notice`` row written first, then sent by ``notice_deliver`` in a Celery task
(enqueued by name after commit). A row is sent at most once: one worker claims it with a
conditional UPDATE (queued -> sending), sends it outside any transaction and records the result.
A send that certainly did not go out (no connection, the gateway busy) goes back to the queue
with backoff; one whose answer was lost becomes ``in_doubt`` for staff, never sent again by
itself. Duplicates are refused by unique constraints: one reminder per request, channel and
day; one confirmation per payment and channel; one notice per API Idempotency-Key.
"""

from __future__ import annotations

import logging
import smtplib
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import IntegrityError, transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.utils import timezone

from config.celery import backoff_seconds, enqueue_on_commit
from payments import sms
from payments.audit import audit_record
from payments.contact import ContactInvalid, parent_phone_international
from payments.models import AuditLog, Notice, Payment, PaymentReceipt, PaymentRequest, School
from payments.models.schools import reminder_days
from payments.state import SETTLED_STATES

logger = logging.getLogger(__name__)

DELIVER_TASK = "payments.tasks.notice_deliver"
REMINDER_KINDS = (Notice.Kind.REMINDER_BEFORE, Notice.Kind.REMINDER_AFTER)


class NoticeRefused(Exception):
    """A send staff asked for that cannot be made; ``code`` for the API, ``detail`` for people."""

    def __init__(self, code: str, detail: str, notice: Notice | None = None):
        self.code, self.detail, self.notice = code, detail, notice
        super().__init__(detail)


@dataclass(frozen=True)
class NoticeQueued:
    notice: Notice
    created: bool


def _recipient(payment_request: PaymentRequest, channel: str) -> str:
    if channel == Notice.Channel.EMAIL:
        if not payment_request.parent_email:
            raise NoticeRefused("no_email", "The request has no parent email address: add one first.")
        return payment_request.parent_email
    if not payment_request.parent_phone:
        raise NoticeRefused("no_phone", "The request has no parent phone number: add one first.")
    return payment_request.parent_phone


def payment_request_send(
    *, payment_request_id: int, channel: str, actor_type: str = AuditLog.ActorType.STAFF, actor: str = "", client_key: str = ""
) -> NoticeQueued:
    """Queue the pay link of an open request to its parent by ``channel`` (email or sms), sent
    after commit. Sending again is allowed (a re-send is a new notice); the same ``client_key``
    again returns the first notice. Raises ``NoticeRefused``."""
    if channel not in Notice.Channel.values:
        raise NoticeRefused("channel_invalid", "channel must be email or sms.")
    client_key = (client_key or "").strip()
    if len(client_key) > 255:
        raise NoticeRefused("idempotency_key_invalid", "Idempotency-Key is longer than 255 characters.")
    with transaction.atomic():
        payment_request = PaymentRequest.objects.select_related("school").get(pk=payment_request_id)
        if client_key:
            existing = Notice.objects.filter(payment_request=payment_request, client_key=client_key).first()
            if existing is not None:
                return _same_key(existing, channel)
        if payment_request.status != PaymentRequest.Status.OPEN:
            raise NoticeRefused("request_not_open", f"The request is {payment_request.get_status_display().lower()}: nothing to pay.")
        recipient = _recipient(payment_request, channel)
        notice = Notice(
            school_id=payment_request.school_id, payment_request=payment_request, kind=Notice.Kind.PAY_LINK,
            channel=channel, recipient=recipient, client_key=client_key, requested_by=actor[:150],
        )  # fmt: skip
        try:
            with transaction.atomic():
                notice.save(force_insert=True)
        except IntegrityError:
            # The same key raced in from another request: its notice won.
            existing = Notice.objects.get(payment_request=payment_request, client_key=client_key)
            return _same_key(existing, channel)
        _audit(notice, "notice.queued", actor_type=actor_type, actor=actor)
        enqueue_on_commit(DELIVER_TASK, str(notice.pk))
    return NoticeQueued(notice, True)


def _same_key(existing: Notice, channel: str) -> NoticeQueued:
    if existing.channel != channel or existing.kind != Notice.Kind.PAY_LINK:
        raise NoticeRefused(
            "idempotency_key_reused", "This Idempotency-Key was used for another send of this request.", existing
        )
    return NoticeQueued(existing, False)


def _audit(notice: Notice, action: str, *, actor_type: str = AuditLog.ActorType.SYSTEM, actor: str = "", **details) -> None:
    target = notice.payment if notice.kind == Notice.Kind.RECEIPT and notice.payment_id else notice.payment_request
    audit_record(
        action=action,
        actor_type=actor_type,
        actor=actor,
        school_id=notice.school_id,
        target=target,
        details={"notice_id": str(notice.pk), "kind": notice.kind, "channel": notice.channel, "status": notice.status, **details},
    )


# --- Sending --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoticeDelivery:
    status: str  # the notice's status after this attempt, or "skipped" when it was not this worker's
    retry_in: float | None = None


class _NotSent(Exception):
    """Nothing went out: try again later."""


class _Refused(Exception):
    """Will not go out as it stands."""


class _InDoubt(Exception):
    """May have gone out."""


def notice_deliver(*, notice_id: uuid.UUID) -> NoticeDelivery:
    """Send one queued notice, if it is due and no other worker has it. Idempotent: a second
    call for a notice already claimed, sent or failed does nothing."""
    now = timezone.now()
    claimed = Notice.objects.filter(pk=notice_id, status=Notice.Status.QUEUED, next_attempt_at__lte=now).update(
        status=Notice.Status.SENDING, claimed_at=now, attempts=F("attempts") + 1
    )
    if not claimed:
        return NoticeDelivery("skipped")
    notice = Notice.objects.select_related("school", "payment_request__student", "payment__student").get(pk=notice_id)
    stale = _no_longer_needed(notice)
    if stale:
        return _finish(notice, Notice.Status.FAILED, error=stale)
    try:
        message_id = _send(notice)
    except _NotSent as exc:
        if notice.attempts >= settings.NOTICE_MAX_ATTEMPTS:
            return _finish(notice, Notice.Status.FAILED, error=f"{exc} (gave up after {notice.attempts} attempts)")
        retry_in = backoff_seconds(notice.attempts)
        Notice.objects.filter(pk=notice.pk, status=Notice.Status.SENDING).update(
            status=Notice.Status.QUEUED, next_attempt_at=now + timedelta(seconds=retry_in), last_error=str(exc)[:2000]
        )
        logger.warning("notice %s not sent, retry in %.0fs: %s", notice.pk, retry_in, exc)
        return NoticeDelivery(Notice.Status.QUEUED, retry_in)
    except _Refused as exc:
        return _finish(notice, Notice.Status.FAILED, error=str(exc))
    except _InDoubt as exc:
        return _finish(notice, Notice.Status.IN_DOUBT, error=str(exc))
    return _finish(notice, Notice.Status.SENT, message_id=message_id)


def _no_longer_needed(notice: Notice) -> str:
    """Why a pay link or reminder queued earlier must not go out now (the request was paid or
    cancelled meanwhile); "" when it should."""
    if notice.kind == Notice.Kind.RECEIPT:
        return ""
    request_status = PaymentRequest.objects.filter(pk=notice.payment_request_id).values_list("status", flat=True).get()
    if request_status != PaymentRequest.Status.OPEN:
        return f"Not sent: the request was {request_status} before it went out."
    return ""


def _finish(notice: Notice, status: str, *, error: str = "", message_id: str = "") -> NoticeDelivery:
    now = timezone.now()
    Notice.objects.filter(pk=notice.pk, status=Notice.Status.SENDING).update(
        status=status, last_error=error[:2000], provider_message_id=message_id[:255], sent_at=now if status == Notice.Status.SENT else None
    )
    notice.status, notice.last_error, notice.provider_message_id = status, error, message_id
    _audit(notice, f"notice.{status}", attempts=notice.attempts, **({"error": error[:500]} if error else {}))
    return NoticeDelivery(status)


def _send(notice: Notice) -> str:
    context = _message_context(notice)
    template = f"payments/notices/{notice.kind}"
    if notice.channel == Notice.Channel.SMS:
        try:
            to = parent_phone_international(notice.recipient, currency=notice.school.currency)
        except ContactInvalid as exc:
            raise _Refused(str(exc)) from exc
        body = render_to_string(f"{template}.sms.txt", context).strip()
        try:
            return sms.get_sms_backend().send(sms.SmsMessage(to=to, body=body)).message_id
        except sms.SmsNotSent as exc:
            raise _NotSent(str(exc)) from exc
        except sms.SmsRefused as exc:
            raise _Refused(str(exc)) from exc
        except sms.SmsInDoubt as exc:
            raise _InDoubt(str(exc)) from exc
    subject = " ".join(render_to_string(f"{template}.subject.txt", context).split())
    body = render_to_string(f"{template}.email.txt", context)
    # Our own Message-ID: a receiving server that sees one message twice can tell.
    message_id = f"<notice-{notice.pk}@{settings.EMAIL_MESSAGE_ID_DOMAIN}>"
    email = EmailMessage(subject, body, settings.DEFAULT_FROM_EMAIL, [notice.recipient], headers={"Message-ID": message_id})
    if notice.kind == Notice.Kind.RECEIPT and context.get("receipt") is not None:
        from payments.receipt_pdf import receipt_pdf

        email.attach(f"receipt-{context['receipt'].number}.pdf", receipt_pdf(context["receipt"]), "application/pdf")
    _email_send(email)
    return message_id


def _email_send(email: EmailMessage) -> None:
    """Send through ``EMAIL_BACKEND`` with ``EMAIL_TIMEOUT``. Connecting is apart from sending,
    so a server that cannot be reached is known to have received nothing."""
    connection = get_connection(fail_silently=False)
    try:
        connection.open()
    except (OSError, smtplib.SMTPException) as exc:
        raise _NotSent(f"The mail server could not be reached: {type(exc).__name__}: {exc}") from exc
    try:
        connection.send_messages([email])
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        if all(400 <= code < 500 for code in codes):
            raise _NotSent(f"The mail server deferred the address: {codes}") from exc
        raise _Refused(f"The mail server refused the address: {codes}") from exc
    except smtplib.SMTPResponseException as exc:
        # An explicit answer before the message was taken: nothing was delivered.
        if 400 <= exc.smtp_code < 500:
            raise _NotSent(f"The mail server deferred the message: {exc.smtp_code}") from exc
        raise _Refused(f"The mail server refused the message: {exc.smtp_code} {exc.smtp_error!r}") from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise _InDoubt(f"The mail server's answer was lost: {type(exc).__name__}") from exc
    finally:
        try:
            connection.close()
        except Exception:  # noqa: BLE001 - the message's fate is already known
            pass


def _message_context(notice: Notice) -> dict:
    school = notice.school
    context: dict = {"school": school, "notice": notice}
    if notice.payment_request_id:
        payment_request = notice.payment_request
        context.update(request=payment_request, student=payment_request.student, pay_url=payment_request.pay_url)
    if notice.kind == Notice.Kind.RECEIPT:
        payment = notice.payment
        receipt = PaymentReceipt.objects.select_related("payment__school").get(payment=payment)
        context.update(payment=payment, receipt=receipt, student=payment.student or context.get("student"))
    return context


# --- Beat: reminders, and notices whose message was lost ------------------------------------------


def school_today(school: School, now: datetime | None = None) -> date:
    """The school's calendar day now (the school's zone where it has one, else TIME_ZONE)."""
    zone_name = getattr(school, "time_zone", "") or settings.TIME_ZONE
    return (now or timezone.now()).astimezone(zoneinfo.ZoneInfo(zone_name)).date()


def payment_reminders_due(*, now: datetime | None = None) -> list[uuid.UUID]:
    """Queue today's reminders of every school that asks for them: an open request with a due
    date ``N`` days ahead (``reminder_days_before``) or ``N`` days past (``reminder_days_after``)
    gets one per channel it has a contact for. Run by beat (hourly): the unique row per request,
    channel and day makes every run after the first of a day a no-op."""
    now = now or timezone.now()
    queued = []
    schools = School.objects.filter(active=True).exclude(reminder_days_before="", reminder_days_after="")
    for school in schools:
        today = school_today(school, now)
        targets: dict[date, str] = {}
        for days in reminder_days(school.reminder_days_after):
            targets[today - timedelta(days=days)] = Notice.Kind.REMINDER_AFTER
        for days in reminder_days(school.reminder_days_before):
            targets[today + timedelta(days=days)] = Notice.Kind.REMINDER_BEFORE
        requests = PaymentRequest.objects.filter(
            school=school, status=PaymentRequest.Status.OPEN, due_date__in=list(targets)
        ).exclude(parent_email="", parent_phone="")
        for payment_request in requests:
            for channel, recipient in _contacts(payment_request.parent_email, payment_request.parent_phone, both=True):
                notice = Notice(
                    school=school, payment_request=payment_request, kind=targets[payment_request.due_date],
                    channel=channel, recipient=recipient, reminder_day=today,
                )  # fmt: skip
                if _insert_once(notice):
                    queued.append(notice.pk)
    return queued


def _contacts(email: str, phone: str, *, both: bool) -> list[tuple[str, str]]:
    """The channels to use: email where known; SMS too (``both``) or only without an email."""
    found = []
    if email:
        found.append((Notice.Channel.EMAIL, email))
    if phone and (both or not email):
        found.append((Notice.Channel.SMS, phone))
    return found


def _insert_once(notice: Notice) -> bool:
    """Insert a notice a unique constraint allows once; False when it exists (another beat, an
    earlier run, a second settlement message). Enqueues its delivery after commit."""
    try:
        with transaction.atomic():
            notice.save(force_insert=True)
            _audit(notice, "notice.queued")
            enqueue_on_commit(DELIVER_TASK, str(notice.pk))
    except IntegrityError:
        return False
    return True


def notices_sweep(*, now: datetime | None = None) -> list[uuid.UUID]:
    """Enqueue again queued notices whose message was lost (broker down, worker killed), and
    mark ``in_doubt`` those whose worker died while sending (it may have sent them)."""
    now = now or timezone.now()
    lost_before = now - timedelta(seconds=settings.NOTICE_CLAIM_SECONDS)
    for notice in Notice.objects.filter(status=Notice.Status.SENDING, claimed_at__lt=lost_before):
        updated = Notice.objects.filter(pk=notice.pk, status=Notice.Status.SENDING, claimed_at__lt=lost_before).update(
            status=Notice.Status.IN_DOUBT, last_error="The worker stopped while sending: it may have gone out."
        )
        if updated:
            notice.status = Notice.Status.IN_DOUBT
            _audit(notice, "notice.in_doubt")
    due = list(
        Notice.objects.filter(status=Notice.Status.QUEUED, next_attempt_at__lte=now - timedelta(seconds=60))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:500]
    )
    for notice_id in due:
        enqueue_on_commit(DELIVER_TASK, str(notice_id))
    return due


# --- Receipts -------------------------------------------------------------------------------------


def payment_receipt_issue(*, payment_id: uuid.UUID) -> list[uuid.UUID]:
    """After a payment first settles: issue its receipt and queue the confirmation to the parent
    (email where an address is known, else SMS with the receipt's link). Idempotent: the receipt
    and each channel's confirmation exist at most once per payment."""
    payment = Payment.objects.select_related("payment_request", "school").get(pk=payment_id)
    if payment.status not in SETTLED_STATES or payment.settled_at is None:
        return []
    receipt = payment_receipt_get_or_create(payment=payment)
    payment_request = payment.payment_request
    payer = payment.payer if isinstance(payment.payer, dict) else {}
    email = (payment_request.parent_email if payment_request else "") or str(payer.get("email") or "")
    phone = (payment_request.parent_phone if payment_request else "") or str(payer.get("phone") or "")
    queued = []
    for channel, recipient in _contacts(email, phone, both=False):
        notice = Notice(
            school_id=payment.school_id, payment=payment, payment_request=payment_request, kind=Notice.Kind.RECEIPT,
            channel=channel, recipient=recipient[:254],
        )  # fmt: skip
        if _insert_once(notice):
            queued.append(notice.pk)
    if not queued and not Notice.objects.filter(payment=payment, kind=Notice.Kind.RECEIPT).exists():
        logger.info("receipt %s issued; no parent contact to send it to", receipt.number)
    return queued


def payment_receipt_get_or_create(*, payment: Payment) -> PaymentReceipt:
    """The payment's one receipt (a racing second insert returns the one that won)."""
    existing = PaymentReceipt.objects.filter(payment=payment).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            receipt = PaymentReceipt.objects.create(payment=payment)
            audit_record(
                action="receipt.issued", actor_type=AuditLog.ActorType.SYSTEM, school_id=payment.school_id,
                target=payment, details={"receipt": receipt.number},
            )  # fmt: skip
            return receipt
    except IntegrityError:
        return PaymentReceipt.objects.get(payment=payment)

