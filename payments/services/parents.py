"""A parent's own history, behind a magic link: asking for a link (sent to an email address or a
phone number that a payment request of that school names), opening it, and sending it.

The link goes out by email (Django's mail API, ``EMAIL_*``) or by SMS (``SMS_BACKEND``, as the
other messages to parents), from a Celery task after commit, retried with backoff. Asking never
says whether the address is known (the same answer either way), and a link is only ever sent to
the address or number on the school's requests, so knowing someone's gains nothing. Links expire after
``PARENT_LINK_TTL_MINUTES``; only the token's SHA-256 is kept once the message is sent.
"""

from __future__ import annotations

import hashlib
import secrets
import smtplib
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage, get_connection
from django.core.validators import validate_email
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from config.celery import enqueue_on_commit
from core.errors import TransientError
from payments import sms
from payments.audit import audit_record
from payments.contact import ContactInvalid, parent_phone_international
from payments.models import AuditLog, ParentAccessLink, School
from payments.selectors import payment_requests_for_parent

# Links asked for one address and school within an hour, beyond which no new one is made.
MAX_LINKS_PER_HOUR = 3


class ParentLinkInvalid(Exception):
    pass


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def parent_contact_clean(value: str, *, school: School) -> str:
    """An email address in lower case, or a phone number in international form (``+256...``,
    a national number taking the school's country code)."""
    contact = (value or "").strip().lower()
    if "@" in contact:
        try:
            validate_email(contact)
        except ValidationError as exc:
            raise ParentLinkInvalid("Enter the email address the school sends your payment links to.") from exc
        return contact
    try:
        return parent_phone_international(contact, currency=school.currency)
    except ContactInvalid as exc:
        raise ParentLinkInvalid(
            "Enter the email address or phone number the school sends your payment links to."
        ) from exc


def parent_link_request(*, school: School, contact: str, remote_addr: str = "") -> ParentAccessLink | None:
    """Make a link for ``contact`` at ``school`` and send it after commit, if a payment request of
    the school names that email address (and it has not asked too often). Returns the link, or
    None; the caller answers the same either way."""
    contact = parent_contact_clean(contact, school=school)
    if not payment_requests_for_parent(school=school, contact=contact).exists():
        return None
    now = timezone.now()
    recent = ParentAccessLink.objects.filter(school=school, contact=contact, created_at__gte=now - timedelta(hours=1))
    if recent.count() >= MAX_LINKS_PER_HOUR:
        return None
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        link = ParentAccessLink.objects.create(
            school=school, contact=contact, token_digest=token_digest(token), token_to_send=token,
            expires_at=now + timedelta(minutes=settings.PARENT_LINK_TTL_MINUTES),
        )  # fmt: skip
        audit_record(action="parent_link.requested", actor_type=AuditLog.ActorType.PARENT, actor=remote_addr,
                     school_id=school.pk, target=link)  # fmt: skip
        enqueue_on_commit("payments.tasks.parent_link_send", link.pk)
    return link


def parent_link_for_token(*, token: str) -> ParentAccessLink | None:
    """The link ``token`` opens, if it has not expired (and its school is active)."""
    if not token or len(token) > 100:
        return None
    link = (
        ParentAccessLink.objects.select_related("school")
        .filter(token_digest=token_digest(token), expires_at__gt=timezone.now(), school__active=True)
        .first()
    )
    if link is not None:
        ParentAccessLink.objects.filter(pk=link.pk).update(last_opened_at=timezone.now())
    return link


def parent_link_send(*, link_id: int) -> str:
    """Send the link by email or SMS (idempotent: a sent link is not sent again). A refused
    address is recorded and not retried; an unreachable mail server or SMS gateway raises
    ``TransientError`` for a retry; an SMS whose answer was lost is not sent again (the parent
    can ask for another link)."""
    link = ParentAccessLink.objects.select_related("school").filter(pk=link_id).first()
    if link is None or link.sent_at is not None or not link.token_to_send:
        return "nothing to send"
    if link.expires_at <= timezone.now():
        ParentAccessLink.objects.filter(pk=link.pk).update(token_to_send="", send_error="expired before it was sent")
        return "expired"
    url = settings.PUBLIC_BASE_URL + reverse("parent-history", args=[link.token_to_send])
    minutes = settings.PARENT_LINK_TTL_MINUTES
    if link.contact.startswith("+"):
        return _link_text(link, url)
    body = (
        f"Hello,\n\nHere is your link to see every payment request, payment and receipt of your "
        f"children at {link.school.name}:\n\n{url}\n\nIt works for {minutes // 60 or minutes} "
        f"{'hours' if minutes >= 120 else 'hour' if minutes >= 60 else 'minutes'}. If you did not ask for it, "
        f"ignore this message: nobody can use it without this email.\n"
    )
    message = EmailMessage(
        subject=f"Your payments at {link.school.name}", body=body, to=[link.contact],
        connection=get_connection(timeout=settings.PARENT_LINK_EMAIL_TIMEOUT_SECONDS),
    )  # fmt: skip
    try:
        message.send()
    except smtplib.SMTPRecipientsRefused as exc:
        ParentAccessLink.objects.filter(pk=link.pk).update(token_to_send="", send_error=f"refused: {exc}"[:500])
        return "refused"
    except (smtplib.SMTPException, OSError) as exc:
        ParentAccessLink.objects.filter(pk=link.pk).update(send_error=f"{type(exc).__name__}: {exc}"[:500])
        raise TransientError(f"mail server unavailable: {type(exc).__name__}") from exc
    ParentAccessLink.objects.filter(pk=link.pk).update(sent_at=timezone.now(), token_to_send="", send_error="")
    return "sent"


def _link_text(link: ParentAccessLink, url: str) -> str:
    body = (
        f"{link.school.name}: your payments, requests and receipts: {url} "
        "(for a short time; ignore it if you did not ask)"
    )
    try:
        sms.get_sms_backend().send(sms.SmsMessage(to=link.contact, body=body))
    except sms.SmsRefused as exc:
        ParentAccessLink.objects.filter(pk=link.pk).update(token_to_send="", send_error=f"refused: {exc}"[:500])
        return "refused"
    except sms.SmsInDoubt as exc:
        # It may have gone out: never twice on our own; the parent can ask for another link.
        ParentAccessLink.objects.filter(pk=link.pk).update(token_to_send="", send_error=f"in doubt: {exc}"[:500])
        return "in doubt"
    except sms.SmsNotSent as exc:
        ParentAccessLink.objects.filter(pk=link.pk).update(send_error=f"not sent: {exc}"[:500])
        raise TransientError(f"SMS gateway unavailable: {exc}") from exc
    ParentAccessLink.objects.filter(pk=link.pk).update(sent_at=timezone.now(), token_to_send="", send_error="")
    return "sent"
