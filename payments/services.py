"""Writes of the payments domain. Each business rule lives here once.

Service functions are keyword-only and named ``<thing>_<verb>``. Functions documented as
"inside the caller's transaction" expect the payment row to be locked already.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from config.celery import enqueue_on_commit
from core.ip_allowlist import IpAllowlistInvalid, ip_allowlist_parse
from core.money import MAX_MINOR_AMOUNT, MoneyError, currency_code, format_minor, parse_major_amount
from core.phone import PhoneInvalid, normalize_mpesa_phone
from core.status import PaymentStatus
from payments import locks, receipts, selectors
from payments.contact import ContactInvalid, parent_email_clean, parent_phone_clean
from payments.ledger import REFUND_RANK, FactKind, FactSource, RefundStatus
from payments.models import (
    MANUAL_METHODS,
    MANUAL_PROVIDER,
    AggregatorAccount,
    AuditLog,
    MappingStatus,
    Payment,
    PaymentMethod,
    PaymentRequest,
    ProviderStudentLink,
    RefundRequest,
    ReviewFlag,
    School,
    Student,
    TransactionFact,
    WebhookEvent,
)
from payments.state import IN_FLIGHT_STATES, SETTLED_STATES
from providers.base import CheckoutResult, NormalizedEvent, NormalizedStatus, RefundResult, ReturnUrls
from providers.errors import (
    OperationNotSupported,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    UnknownProvider,
)
from providers.registry import get_provider, provider_slugs

logger = logging.getLogger(__name__)

S = PaymentStatus


# --- Audit log --------------------------------------------------------------------------------


def audit_entry(
    *,
    action: str,
    actor_type: str,
    actor: str = "",
    school_id: int | None = None,
    target: Any = None,
    details: dict[str, Any] | None = None,
) -> AuditLog:
    """An unsaved audit entry, for callers that write several rows in one insert."""
    return AuditLog(
        action=action,
        actor_type=actor_type,
        actor=actor[:150],
        school_id=school_id,
        target_type=type(target).__name__ if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        details=details or {},
    )


def audit_record(**kwargs) -> AuditLog:
    entry = audit_entry(**kwargs)
    entry.save()
    return entry


# --- Provider events: facts in, the payment folded out (payments.ledger) -----------------------


@dataclass(frozen=True)
class PaymentChange:
    payment: Payment | None
    created: bool
    applied: bool  # the payment's state or amounts changed
    from_status: str | None
    to_status: str | None
    note: str


def payment_event_apply(
    *,
    account: AggregatorAccount,
    event: NormalizedEvent,
    webhook_event_id: int | None = None,
    received_at: datetime | None = None,
    audit_action: str = "payment.webhook",
) -> PaymentChange:
    """Record what a verified provider event says about its transaction and settle the payment
    from everything known, inside the caller's transaction.

    The event's facts are kept whatever they say. A charge creates its payment when none exists
    yet; a refund or dispute that arrives first waits, unattached, and is taken into account
    when its payment appears. The payment is then folded from all its facts
    (``payment_settle``), so any order of the same events gives the same payment. One audit
    entry says what changed, or why nothing did.
    """
    if not event.concerns_payment:
        return PaymentChange(None, False, False, None, None, f"{event.event_type} concerns no payment")
    occurred_at = event.occurred_at or received_at or timezone.now()
    facts = _facts_from_event(event, occurred_at=occurred_at, webhook_event_id=webhook_event_id)
    ids = _event_ids(event)
    locks.transaction_ids_lock(account_id=account.pk, ids=ids)
    payment = selectors.payment_for_ids_locked(account=account, ids=ids)
    created = payment is None
    if payment is None:
        if not facts:
            # An unconfirmed claim (a refund notice) about a transaction we have no payment for:
            # nothing to keep; its charge's confirmation, when it comes, reports the refunds.
            return PaymentChange(None, False, False, None, None, f"{event.event_type}: no payment for it yet")
        if not any(fact.kind == FactKind.CHARGE for fact in facts):
            for fact in facts:
                fact.school_id, fact.account = account.school_id, account
                fact.txn_id, fact.reference = event.external_txn_id[:128], event.reference[:128]
            TransactionFact.objects.bulk_create(facts)
            what = ", ".join(_fact_summary(fact) for fact in facts)
            return PaymentChange(None, False, False, None, None, f"{what}: waits for its payment")
        payment = _payment_from_event(account=account, event=event)
        payment.save(force_insert=True)
    else:
        _payment_ids_learn(payment, event)
    _facts_adopt(payment)
    _facts_add(payment, facts)
    return payment_settle(
        payment=payment,
        created=created,
        actor_type=AuditLog.ActorType.PROVIDER,
        actor=account.provider,
        audit_action=audit_action,
        details={"event_id": event.event_id, "event_type": event.event_type},
        reported=event.status,
    )


def payment_provider_status_apply(*, payment_id: uuid.UUID, status: NormalizedStatus, source: str) -> PaymentChange:
    """Record what the provider's API says about a payment now (the authority where a webhook's
    body is not trusted, and the janitor's answer for a payment whose webhook never came), and
    settle the payment. Audited as ``payment.confirmed``. Call it outside the provider request:
    no lock is held across a network call."""
    with transaction.atomic():
        payment = payment_lock(payment_id=payment_id, new_ids=[("txn", status.external_txn_id)])
        if status.external_txn_id and not payment.external_txn_id:
            payment.external_txn_id = status.external_txn_id
            payment.save(update_fields=["external_txn_id", "updated_at"])
        _facts_adopt(payment)
        _facts_add(payment, _facts_from_status(status, payment=payment, source_ref=source))
        return payment_settle(
            payment=payment,
            actor_type=AuditLog.ActorType.PROVIDER,
            actor=payment.provider,
            audit_action="payment.confirmed",
            details={"event_id": source, "event_type": f"status.{status.status}", "detail": status.detail[:200]},
            reported=status.status,
        )


def payment_lock(*, payment_id: uuid.UUID, new_ids: list[tuple[str, str]] = ()) -> Payment:
    """Lock a payment row that is about to learn ids of its transaction (``new_ids``): the ids are
    locked first (``payments.locks`` order), so a fact cannot start waiting on one of them while
    the payment takes it."""
    account_id = Payment.objects.filter(pk=payment_id).values_list("account_id", flat=True).get()
    if account_id is not None and any(value for _, value in new_ids):
        locks.transaction_ids_lock(account_id=account_id, ids=new_ids)
    return Payment.objects.select_for_update(no_key=True, of=("self",)).select_related("account").get(pk=payment_id)


def payment_fact_add(
    *,
    payment: Payment,
    status: str,
    source: str,
    source_ref: str,
    actor_type: str,
    actor: str,
    audit_action: str,
    details: dict[str, Any] | None = None,
    amount_minor: int | None = None,
) -> PaymentChange:
    """Our own word on a payment's charge, inside the caller's transaction with the payment row
    locked: the payer gave it up (cancelled), the janitor expired it, the provider refused to
    start it (failed), staff confirmed or rejected a manual payment. It is one more fact: a
    success the provider reports later still wins."""
    fact = TransactionFact(
        kind=FactKind.CHARGE,
        status=status,
        amount_minor=amount_minor,
        currency=payment.currency if amount_minor is not None else "",
        occurred_at=timezone.now(),
        source=source,
        source_ref=source_ref[:255],
    )
    _facts_add(payment, [fact])
    return payment_settle(
        payment=payment, actor_type=actor_type, actor=actor, audit_action=audit_action, details=details or {},
        reported=status,
    )  # fmt: skip


def payment_settle(
    *,
    payment: Payment,
    actor_type: str,
    actor: str,
    audit_action: str,
    details: dict[str, Any],
    created: bool = False,
    reported: str | None = None,
) -> PaymentChange:
    """Fold the locked payment's facts (``payments.ledger``) and store the result: status,
    amounts, conflicts for staff, the janitor's next check. Then, in the same transaction: one
    audit entry, the payment request settled when the payment first succeeds
    (``payment_finalize``), and the books told after commit when what the school holds changed.
    """
    refund_requests_sync(payment=payment)
    ledger = selectors.payment_ledger(payment=payment)
    before = _Money.of(payment, status=None if created else payment.status)
    from_status = before.status
    changed: set[str] = set()

    def put(name: str, value: Any) -> None:
        if getattr(payment, name) != value:
            setattr(payment, name, value)
            changed.add(name)

    now = timezone.now()
    first_settled = ledger.status in SETTLED_STATES and payment.settled_at is None
    if ledger.status != payment.status:
        put("status", ledger.status)
        put("status_changed_at", now)
    if ledger.status in SETTLED_STATES:
        # What the provider confirms received, even if it is not what was asked for.
        put("amount_minor", ledger.received_minor)
        put("currency", ledger.currency)
        if first_settled:
            put("settled_at", now)
    put("refunded_amount_minor", ledger.refunded_minor)
    put("refund_pending_amount_minor", ledger.refund_pending_minor)
    put("charged_back_amount_minor", ledger.charged_back_minor)
    put("disputed_amount_minor", ledger.disputed_minor)
    put("ledger_conflict", "; ".join(ledger.conflicts)[:2000])
    if ledger.status not in IN_FLIGHT_STATES and payment.review_flag == ReviewFlag.STATUS_UNKNOWN:
        put("review_flag", ReviewFlag.NONE)
        put("review_flag_reason", "")
    _recheck_schedule(payment, ledger, now, put)

    if changed:
        payment.save(update_fields=sorted(changed | {"updated_at"}))

    after = _Money.of(payment, status=payment.status)
    applied = created or after != before
    note = _settle_note(before, after, ledger, reported)
    audit_record(
        action=audit_action,
        actor_type=actor_type,
        actor=actor,
        school_id=payment.school_id,
        target=payment,
        details={
            **details,
            "from": from_status,
            "to": payment.status,
            "applied": applied,
            "note": note,
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
            "refunded_minor": payment.refunded_amount_minor,
            "net_minor": payment.net_minor,
            **({"conflict": payment.ledger_conflict} if ledger.conflicts else {}),
        },
    )
    if first_settled and payment.payment_request_id:
        # A payment started from a pay link: settle its request in this same transaction.
        outcome = payment_finalize(payment=payment, actor_type=actor_type, actor=actor)
        note = f"{note}; {outcome.summary}"
    if ledger.status in SETTLED_STATES and (first_settled or after.held != before.held):
        payment_offer_to_books_on_commit(payment_id=payment.pk)
    return PaymentChange(payment, created, applied, from_status, payment.status, note)


def payment_offer_to_books_on_commit(*, payment_id: uuid.UUID) -> None:
    """Offer a payment to QuickBooks once the current change commits: what the school holds may
    just have changed (settled, refunded, charged back, mapped to a student). Idempotent and
    cheap; the QuickBooks app decides. An error there must not undo the committed change: it is
    logged, and the QuickBooks backlog scan finds the payment later."""
    from quickbooks_sync.services import qbo_sync_request  # the books app builds on this one

    transaction.on_commit(lambda: qbo_sync_request(payment_id=payment_id), robust=True)


@dataclass(frozen=True)
class _Money:
    """What ``payment_settle`` compares before and after a fold."""

    status: str | None
    amount_minor: int
    currency: str
    refunded_minor: int
    charged_back_minor: int
    disputed_minor: int

    @classmethod
    def of(cls, payment: Payment, *, status: str | None) -> _Money:
        return cls(
            status, payment.amount_minor, payment.currency, payment.refunded_amount_minor,
            payment.charged_back_amount_minor, payment.disputed_amount_minor,
        )  # fmt: skip

    @property
    def held(self) -> tuple:
        """What the books care about: the money received and what went back."""
        return (self.amount_minor, self.currency, self.refunded_minor, self.charged_back_minor)


def _settle_note(before: _Money, after: _Money, ledger, reported: str | None) -> str:
    parts = []
    if before.status != after.status:
        parts.append(f"{before.status or 'new'} -> {after.status}")
    amount_changed = (before.amount_minor, before.currency) != (after.amount_minor, after.currency)
    if before.status is not None and amount_changed and after.status in SETTLED_STATES:
        parts.append(f"amount {before.currency} {before.amount_minor} -> {after.currency} {after.amount_minor} (as confirmed)")
    if before.refunded_minor != after.refunded_minor:
        parts.append(f"refunded {after.refunded_minor} of {after.amount_minor}")
    if before.charged_back_minor != after.charged_back_minor:
        parts.append(f"charged back {after.charged_back_minor} of {after.amount_minor}")
    if before.disputed_minor != after.disputed_minor:
        parts.append(f"disputed {after.disputed_minor}")
    if parts:
        return "; ".join(parts)
    if ledger.waiting:
        return f"recorded: refunds or disputes wait for the payment to succeed (now {after.status})"
    if reported and reported != after.status and not (reported == S.SUCCEEDED and after.status in SETTLED_STATES):
        return f"recorded: {reported} after {after.status} (outranked)"
    return "no change"


def _recheck_schedule(payment: Payment, ledger, now: datetime, put) -> None:
    """Nothing is left without a next look: a provider payment that is not settled (or has
    refunds waiting for its success) stays on the janitor's schedule; a settled one leaves it."""
    recheckable = payment.account_id is not None and not payment.is_manual
    if recheckable and (ledger.status in RECHECKABLE_STATES or ledger.waiting):
        if ledger.waiting and ledger.status not in RECHECKABLE_STATES:
            # A refund proves a success we have not heard of: ask the provider now.
            put("next_check_at", now)
        elif payment.next_check_at is None and payment.status_checks == 0:
            put("next_check_at", _recheck_time(payment.checkout_created_at or payment.created_at or now, 0))
    elif payment.next_check_at is not None and ledger.status not in RECHECKABLE_STATES:
        put("next_check_at", None)


def _event_ids(event: NormalizedEvent) -> list[tuple[str, str]]:
    return [
        ("txn", event.external_txn_id), ("ref", event.reference), ("checkout", event.checkout_id),
        # A charge id is in the transaction ids' namespace: a charge-only transaction has no other.
        ("txn", event.charge_id),
    ]  # fmt: skip


def _fact_summary(fact: TransactionFact) -> str:
    amount = format_minor(fact.amount_minor, fact.currency) if fact.amount_minor is not None else ""
    return f"{fact.kind} {fact.status} {amount}".strip()


def _facts_from_event(
    event: NormalizedEvent, *, occurred_at: datetime, webhook_event_id: int | None
) -> list[TransactionFact]:
    """The facts a verified event states. A body not bound to a secret states only that the
    transaction is under way: its money claims wait for the provider's API
    (``payment_provider_status_apply``)."""
    common = {
        "occurred_at": occurred_at,
        "source": FactSource.PROVIDER_EVENT,
        "source_ref": event.event_id[:255],
        "webhook_event_id": webhook_event_id,
    }
    if event.requires_confirmation:
        if event.status is None:
            return []
        status = S.PENDING if event.status == S.PENDING else S.PROCESSING
        return [TransactionFact(kind=FactKind.CHARGE, status=status, **common)]
    facts = []
    if event.status is not None:
        facts.append(
            TransactionFact(
                kind=FactKind.CHARGE, status=event.status, amount_minor=event.amount_minor, currency=event.currency,
                **common,
            )  # fmt: skip
        )
    for refund in event.refunds:
        facts.append(
            TransactionFact(
                kind=FactKind.REFUND, key=(refund.key or f"event:{event.event_id}")[:255], status=refund.status,
                amount_minor=refund.amount_minor, currency=event.currency, **common,
            )  # fmt: skip
        )
    if event.refunded_total_minor is not None:
        facts.append(
            TransactionFact(
                kind=FactKind.REFUNDED_TOTAL, amount_minor=event.refunded_total_minor, currency=event.currency,
                **common,
            )  # fmt: skip
        )
    for dispute in event.disputes:
        facts.append(
            TransactionFact(
                kind=FactKind.DISPUTE, key=dispute.key[:255], status=dispute.status,
                amount_minor=dispute.amount_minor, currency=event.currency, **common,
            )  # fmt: skip
        )
    return facts


def _facts_from_status(status: NormalizedStatus, *, payment: Payment, source_ref: str) -> list[TransactionFact]:
    common = {"occurred_at": timezone.now(), "source": FactSource.PROVIDER_API, "source_ref": source_ref[:255]}
    currency = status.currency or payment.currency
    facts = [
        TransactionFact(
            kind=FactKind.CHARGE,
            status=status.status,
            amount_minor=status.amount_minor if status.amount_minor is not None else None,
            currency=currency if status.amount_minor is not None else "",
            **common,
        )
    ]
    if status.status == S.SUCCEEDED and status.amount_minor is None:
        facts[0].amount_minor, facts[0].currency = payment.amount_minor, payment.currency
    for refund in status.refunds:
        facts.append(
            TransactionFact(
                kind=FactKind.REFUND, key=refund.key[:255], status=refund.status, amount_minor=refund.amount_minor,
                currency=currency, **common,
            )  # fmt: skip
        )
    if status.refunded_total_minor is not None:
        facts.append(
            TransactionFact(
                kind=FactKind.REFUNDED_TOTAL, amount_minor=status.refunded_total_minor, currency=currency, **common
            )
        )
    for dispute in status.disputes:
        facts.append(
            TransactionFact(
                kind=FactKind.DISPUTE, key=dispute.key[:255], status=dispute.status,
                amount_minor=dispute.amount_minor, currency=currency, **common,
            )  # fmt: skip
        )
    return facts


def _facts_add(payment: Payment, facts: list[TransactionFact]) -> None:
    """Keep the new facts of a locked payment. A report that only repeats the latest one of its
    kind (the janitor asking again, an event stating what another said) adds nothing, so the
    ledger does not grow with every check; the fold would give the same answer either way."""
    if not facts:
        return
    latest: dict[tuple, tuple] = {}
    for kind, key, source, status, amount, currency in (
        TransactionFact.objects.filter(payment=payment)
        .order_by("occurred_at", "id")
        .values_list("kind", "key", "source", "status", "amount_minor", "currency")
    ):
        latest[(kind, key, source)] = (status, amount, currency)
    new = []
    for fact in facts:
        fact.payment, fact.school_id, fact.account_id = payment, payment.school_id, payment.account_id
        slot = (fact.kind, fact.key, fact.source)
        value = (fact.status, fact.amount_minor, fact.currency)
        if latest.get(slot) == value:
            continue
        latest[slot] = value
        new.append(fact)
    TransactionFact.objects.bulk_create(new)


def _facts_adopt(payment: Payment) -> int:
    """Attach the facts that were waiting for this payment (found by its ids in its account),
    and link their webhook events to it."""
    if payment.account_id is None:
        return 0
    match = Q()
    for txn_id in {payment.external_txn_id, payment.provider_charge_id} - {None, ""}:
        match |= Q(txn_id=txn_id)
    for reference in {payment.reference, payment.provider_reference} - {None, ""}:
        match |= Q(reference=reference)
    if not match:
        return 0
    waiting = TransactionFact.objects.filter(match, account_id=payment.account_id, payment__isnull=True)
    events = set(waiting.exclude(webhook_event__isnull=True).values_list("webhook_event_id", flat=True))
    adopted = waiting.update(payment=payment)
    if events:
        WebhookEvent.objects.filter(pk__in=events, payment__isnull=True).update(payment=payment)
    return adopted


def _payment_from_event(*, account: AggregatorAccount, event: NormalizedEvent) -> Payment:
    """A new payment for a transaction we first hear of from its provider (saved by
    ``payment_settle``)."""
    return Payment(
        id=uuid.uuid4(),
        school_id=account.school_id,
        account=account,
        provider=account.provider,
        external_txn_id=event.external_txn_id or None,
        provider_checkout_id=event.checkout_id or None,
        provider_reference=event.reference,
        provider_charge_id=event.charge_id if event.charge_id != event.external_txn_id else "",
        amount_minor=event.amount_minor,
        currency=event.currency,
        status=S.PENDING,
        provider_student_id=event.provider_student_id,
        mapping_status=MappingStatus.PENDING if event.provider_student_id else MappingStatus.NOT_APPLICABLE,
        payer=dict(event.payer),
    )


def _payment_ids_learn(payment: Payment, event: NormalizedEvent) -> None:
    """Remember the ids an event gives for a payment we already have (our own checkout learns its
    provider transaction id this way), so later events, and facts waiting, find it."""
    changed = []
    if not payment.external_txn_id and event.external_txn_id:
        payment.external_txn_id = event.external_txn_id
        changed.append("external_txn_id")
    if not payment.provider_checkout_id and event.checkout_id:
        payment.provider_checkout_id = event.checkout_id
        changed.append("provider_checkout_id")
    if event.reference and event.reference != payment.reference and not payment.provider_reference:
        payment.provider_reference = event.reference
        changed.append("provider_reference")
    if event.charge_id and event.charge_id != payment.external_txn_id and not payment.provider_charge_id:
        payment.provider_charge_id = event.charge_id
        changed.append("provider_charge_id")
    if not payment.provider_student_id and event.provider_student_id:
        payment.provider_student_id = event.provider_student_id
        payment.mapping_status = MappingStatus.PENDING
        changed += ["provider_student_id", "mapping_status"]
    if changed:
        payment.save(update_fields=[*changed, "updated_at"])



# --- Student mapping ----------------------------------------------------------------------------


def payment_student_map(*, payment_id: uuid.UUID, directory=None) -> str:
    """Map the payment's provider student id to the school's student.

    Known mappings come from ``ProviderStudentLink``; otherwise the School Directory is asked
    (no lock is held during that call). An unknown student leaves the payment ``unmatched`` for
    staff; it is never dropped. Raises ``DirectoryUnavailable`` for the caller to retry.
    Returns the payment's mapping status.
    """
    payment = Payment.objects.select_related("school").get(pk=payment_id)
    if payment.student_id is not None or not payment.provider_student_id:
        return payment.mapping_status

    link = (
        ProviderStudentLink.objects.select_related("student")
        .filter(
            school_id=payment.school_id,
            provider=payment.provider,
            provider_student_id=payment.provider_student_id,
        )
        .first()
    )
    if link is not None:
        student, source = link.student, "cache"
    else:
        if directory is None:
            from directory_client.client import default_directory_client

            directory = default_directory_client()
        record = directory.lookup_student(
            school_code=payment.school.code,
            provider=payment.provider,
            provider_student_id=payment.provider_student_id,
        )
        if record is None:
            _payment_mapping_set(
                payment,
                status=MappingStatus.UNMATCHED,
                error="The School Directory does not know this student id.",
                action="payment.unmatched",
            )
            return MappingStatus.UNMATCHED
        student = student_upsert(school=payment.school, student_number=record.student_id, full_name=record.full_name)
        ProviderStudentLink.objects.get_or_create(
            school_id=payment.school_id,
            provider=payment.provider,
            provider_student_id=payment.provider_student_id,
            defaults={"student": student, "source": ProviderStudentLink.Source.DIRECTORY},
        )
        source = "directory"

    with transaction.atomic():
        updated = Payment.objects.filter(pk=payment.pk, student__isnull=True).update(
            student=student, mapping_status=MappingStatus.MAPPED, mapping_error="", updated_at=timezone.now()
        )
        if updated:
            payment_offer_to_books_on_commit(payment_id=payment.pk)
            audit_record(
                action="payment.mapped",
                actor_type=AuditLog.ActorType.SYSTEM,
                actor="directory",
                school_id=payment.school_id,
                target=payment,
                details={"student_number": student.student_number, "source": source},
            )
    return MappingStatus.MAPPED


class MappingRefused(Exception):
    """Staff asked to map a payment that cannot be mapped by hand; the message says why."""


def payment_student_assign(*, payment_id: uuid.UUID, student_number: str, full_name: str = "", actor) -> Student:
    """Staff map a payment to a student by hand (the directory did not know the student, was
    down, or no student id came with the payment).

    The student is the school's student with that number, created from ``full_name`` when it
    is new to us. Only a payment without a student can be mapped: re-pointing a mapped payment
    would leave QuickBooks with the old customer. The provider's student id is remembered
    (``ProviderStudentLink``, source staff), so the next payment with it maps by itself, and
    the payment is offered to QuickBooks when this commits."""
    student_number = student_number.strip()
    if not student_number:
        raise MappingRefused("Enter the school's student id.")
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True).select_related("school").get(pk=payment_id)
        if payment.student_id is not None:
            raise MappingRefused(f"This payment is already mapped to student {payment.student}.")
        student = Student.objects.filter(school_id=payment.school_id, student_number=student_number).first()
        if student is None:
            if not full_name.strip():
                raise MappingRefused(
                    f"No student {student_number} is known at this school yet: enter their full name to add them."
                )
            student = student_upsert(school=payment.school, student_number=student_number, full_name=full_name.strip())
        if payment.provider_student_id:
            ProviderStudentLink.objects.update_or_create(
                school_id=payment.school_id,
                provider=payment.provider,
                provider_student_id=payment.provider_student_id,
                defaults={"student": student, "source": ProviderStudentLink.Source.STAFF},
            )
        previous = payment.mapping_status
        payment.student = student
        payment.mapping_status = MappingStatus.MAPPED
        payment.mapping_error = ""
        payment.save(update_fields=["student", "mapping_status", "mapping_error", "updated_at"])
        payment_offer_to_books_on_commit(payment_id=payment.pk)
        audit_record(
            action="payment.mapped",
            actor_type=AuditLog.ActorType.STAFF,
            actor=actor.get_username(),
            school_id=payment.school_id,
            target=payment,
            details={"student_number": student.student_number, "source": "staff", "previous": previous},
        )
    return student


def payment_mapping_fail(*, payment_id: uuid.UUID, error: str) -> None:
    """The directory stayed unavailable through every retry: make it visible to staff."""
    payment = Payment.objects.get(pk=payment_id)
    if payment.student_id is None:
        _payment_mapping_set(payment, status=MappingStatus.FAILED, error=error, action="payment.mapping_failed")


def _payment_mapping_set(payment: Payment, *, status: str, error: str, action: str) -> None:
    with transaction.atomic():
        updated = Payment.objects.filter(pk=payment.pk, student__isnull=True).update(
            mapping_status=status, mapping_error=error, updated_at=timezone.now()
        )
        if updated:
            audit_record(
                action=action,
                actor_type=AuditLog.ActorType.SYSTEM,
                actor="directory",
                school_id=payment.school_id,
                target=payment,
                details={"provider_student_id": payment.provider_student_id, "error": error},
            )


def student_upsert(*, school: School, student_number: str, full_name: str) -> Student:
    student, created = Student.objects.get_or_create(
        school=school, student_number=student_number, defaults={"full_name": full_name}
    )
    if not created and full_name and student.full_name != full_name:
        student.full_name = full_name
        student.save(update_fields=["full_name", "updated_at"])
    return student


# --- Onboarding -----------------------------------------------------------------------------------


class OnboardingError(Exception):
    """Bad input to an onboarding command; the message is one line for the operator."""


_SCHOOL_CODE_RE = r"^[a-z0-9][a-z0-9-]{0,31}$"


def school_create(*, code: str, name: str, currency: str) -> School:
    code = code.strip().lower()
    if not re.fullmatch(_SCHOOL_CODE_RE, code):
        raise OnboardingError(f"invalid school code {code!r}: use 1-32 lower-case letters, digits or '-'")
    if not name.strip():
        raise OnboardingError("school name must not be empty")
    try:
        currency = currency_code(currency)
    except MoneyError as exc:
        raise OnboardingError(f"unknown currency {currency!r} (expected an ISO 4217 code such as UGX)") from exc
    with transaction.atomic():
        if School.objects.filter(code=code).exists():
            raise OnboardingError(f"school {code!r} already exists")
        try:
            school = School.objects.create(code=code, name=name.strip(), currency=currency)
        except IntegrityError as exc:  # a concurrent create won
            raise OnboardingError(f"school {code!r} already exists") from exc
        audit_record(
            action="school.created",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor="cli",
            school_id=school.pk,
            target=school,
            details={"code": code, "currency": currency},
        )
    return school


def generate_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


def account_create(
    *,
    school_code: str,
    provider: str,
    webhook_secret: str | None = None,
    api_key: str = "",
    credentials: dict | None = None,
    test_mode: bool = False,
    ip_allowlist: str = "",
    actor: str = "cli",
) -> tuple[AggregatorAccount, str]:
    """Connect a school to a provider. Returns the account and its webhook secret (generated
    when none is given, for the caller to show once)."""
    _ip_allowlist_check(ip_allowlist)
    try:
        adapter = get_provider(provider)
    except UnknownProvider as exc:
        raise OnboardingError(f"unknown provider {provider!r} (known: {', '.join(provider_slugs())})") from exc
    school = School.objects.filter(code=school_code.strip().lower()).first()
    if school is None:
        raise OnboardingError(f"unknown school {school_code!r}")
    if adapter.signs_with_api_key:
        # The provider signs webhooks with the secret API key itself (Paystack): one value.
        if webhook_secret and api_key and webhook_secret != api_key:
            raise OnboardingError(f"{adapter.slug} signs webhooks with its secret API key: give it once, as --api-key")
        webhook_secret = webhook_secret or api_key or None
        if not webhook_secret:
            raise OnboardingError(f"{adapter.slug} signs webhooks with its secret API key: pass --api-key")
        api_key = webhook_secret
    if webhook_secret is not None and len(webhook_secret) < 6:
        raise OnboardingError("webhook secret is too short (at least 6 characters)")
    secret = webhook_secret or generate_webhook_secret()
    with transaction.atomic():
        if AggregatorAccount.objects.filter(school=school, provider=adapter.slug).exists():
            raise OnboardingError(f"school {school.code!r} already has a {adapter.slug} account")
        try:
            account = AggregatorAccount.objects.create(
                school=school,
                provider=adapter.slug,
                webhook_secret=secret,
                api_key=api_key,
                credentials=credentials or {},
                test_mode=test_mode,
                ip_allowlist=ip_allowlist,
            )
        except IntegrityError as exc:
            raise OnboardingError(f"school {school.code!r} already has a {adapter.slug} account") from exc
        audit_record(
            action="account.created",
            actor_type=AuditLog.ActorType.STAFF if actor != "cli" else AuditLog.ActorType.SYSTEM,
            actor=actor,
            school_id=school.pk,
            target=account,
            details={"provider": adapter.slug, "test_mode": test_mode, "ip_allowlist": ip_allowlist},
        )
    return account, secret


def account_update(
    *,
    account_id: int,
    test_mode: bool | None = None,
    active: bool | None = None,
    ip_allowlist: str | None = None,
    actor: str = "cli",
) -> tuple[AggregatorAccount, list[str]]:
    """Change an account's switches; None leaves a field as it is. Secrets change only through
    ``account_rotate_secret``. Audited as ``account.updated`` with the changed fields' names and
    new values (none of them is a secret); a save that changes nothing writes nothing. Returns
    the account and the names of the changed fields."""
    if ip_allowlist is not None:
        _ip_allowlist_check(ip_allowlist)
    wanted = {"test_mode": test_mode, "active": active, "ip_allowlist": ip_allowlist}
    with transaction.atomic():
        account = AggregatorAccount.objects.select_for_update().select_related("school").get(pk=account_id)
        changes = {
            name: value for name, value in wanted.items() if value is not None and getattr(account, name) != value
        }
        if not changes:
            return account, []
        for name, value in changes.items():
            setattr(account, name, value)
        # Saving clears the webhook path's account cache (PaymentsConfig.ready).
        account.save(update_fields=[*changes, "updated_at"])
        audit_record(
            action="account.updated",
            actor_type=AuditLog.ActorType.STAFF if actor != "cli" else AuditLog.ActorType.SYSTEM,
            actor=actor,
            school_id=account.school_id,
            target=account,
            details={"provider": account.provider, "changed": sorted(changes), **changes},
        )
    return account, sorted(changes)


def _ip_allowlist_check(text: str) -> None:
    try:
        ip_allowlist_parse(text)
    except IpAllowlistInvalid as exc:
        raise OnboardingError(f"IP allowlist: {exc}") from exc


# --- Webhook secret rotation ----------------------------------------------------------------------


def account_rotate_secret(
    *,
    school_code: str,
    provider: str,
    new_secret: str | None = None,
    grace_hours: float = 24,
    expected_updated_at: datetime | None = None,
    actor: str = "cli",
) -> tuple[AggregatorAccount, str]:
    """Give an account a new webhook secret; the current one keeps verifying for ``grace_hours``.

    The rule: the new secret signs from now on; the old one moves to ``previous_webhook_secret``
    until ``previous_secret_expires_at`` (``webhook_secrets()`` offers both meanwhile), so
    deliveries the provider signed before its side was switched are still accepted. A grace of 0
    ends the old secret at once. Rotating again during a grace period replaces the older secret.
    A secret is generated when none is given, except for providers that sign with their secret
    API key (Paystack): the new key comes from the provider's dashboard and becomes the API key
    too. Audited as ``secret.rotated`` (never with a secret). Returns the account and the new
    secret, for the caller to show once.

    ``expected_updated_at``: rotate only if the account is unchanged since the caller read it, so
    a form submitted twice (a browser's reload) cannot rotate twice and lose the secret shown.
    """
    try:
        adapter = get_provider(provider)
    except UnknownProvider as exc:
        raise OnboardingError(f"unknown provider {provider!r} (known: {', '.join(provider_slugs())})") from exc
    if grace_hours < 0 or grace_hours > 24 * 30:
        raise OnboardingError("grace period must be between 0 and 720 hours")
    if adapter.signs_with_api_key and not new_secret:
        raise OnboardingError(
            f"{adapter.slug} signs webhooks with its secret API key: roll the key in its dashboard and pass it with --secret"
        )
    if new_secret is not None and len(new_secret) < 6:
        raise OnboardingError("webhook secret is too short (at least 6 characters)")
    secret = new_secret or generate_webhook_secret()
    with transaction.atomic():
        account = (
            AggregatorAccount.objects.select_for_update()
            .select_related("school")
            .filter(school__code=school_code.strip().lower(), provider=adapter.slug)
            .first()
        )
        if account is None:
            raise OnboardingError(f"school {school_code!r} has no {adapter.slug} account")
        if expected_updated_at is not None and account.updated_at != expected_updated_at:
            raise OnboardingError(
                "the account changed since this form was opened (was the secret just rotated?): nothing was rotated"
            )
        if secret == account.webhook_secret:
            raise OnboardingError("the new secret is the current one")
        now = timezone.now()
        account.previous_webhook_secret = account.webhook_secret if grace_hours else ""
        account.previous_secret_expires_at = now + timedelta(hours=grace_hours) if grace_hours else None
        account.webhook_secret = secret
        fields = ["webhook_secret", "previous_webhook_secret", "previous_secret_expires_at", "updated_at"]
        if adapter.signs_with_api_key:
            account.api_key = secret
            fields.append("api_key")
        account.save(update_fields=fields)
        audit_record(
            action="secret.rotated",
            actor_type=AuditLog.ActorType.STAFF if actor != "cli" else AuditLog.ActorType.SYSTEM,
            actor=actor,
            school_id=account.school_id,
            target=account,
            details={
                "provider": adapter.slug,
                "grace_hours": grace_hours,
                "previous_valid_until": account.previous_secret_expires_at.isoformat()
                if account.previous_secret_expires_at
                else None,
                "api_key_rotated": adapter.signs_with_api_key,
            },
        )
    return account, secret


# --- Payment requests (issue 4) ---------------------------------------------------------------


class PaymentRequestInvalid(Exception):
    """Input that cannot become a payment request. ``errors`` maps a field to a message that is
    safe to show to staff."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))


class PaymentRequestStateError(Exception):
    """The request is not in a state that allows this (e.g. cancelling a paid request)."""


@dataclass(frozen=True)
class PaymentRequestDraft:
    """A checked, not yet saved payment request."""

    student: Student
    description: str
    amount_minor: int
    currency: str
    due_date: date | None
    parent_email: str = ""
    parent_phone: str = ""


def payment_request_draft(
    *,
    school: School,
    student_number: str,
    description: str,
    amount: str | int | None = None,
    amount_minor: int | None = None,
    currency: str | None = "",
    due_date: date | str | None = None,
    parent_email: str | None = "",
    parent_phone: str | None = "",
    students: Mapping[str, Student] | None = None,
) -> PaymentRequestDraft:
    """Check what staff typed (admin, API or one CSV row) and return a draft, or raise
    ``PaymentRequestInvalid`` with every problem at once.

    ``amount`` is in major units and parsed strictly for the currency (``"450,000"`` UGX,
    ``"1,500.50"`` KES: more decimals than the currency has is an error, never a rounding);
    ``amount_minor`` is an integer count of minor units. Exactly one of them. The student is the
    school's student number and must be known (Django admin: Students). ``students`` is an
    optional look-up table for bulk imports.
    """
    errors: dict[str, str] = {}
    number = (student_number or "").strip()
    student = None
    if not number:
        errors["student_id"] = "This field is required."
    elif students is not None:
        student = students.get(number)
    else:
        student = Student.objects.filter(school=school, student_number=number).first()
    if number and student is None:
        errors["student_id"] = f"Unknown student {number!r} at {school.code}."

    text = (description or "").strip()
    if not text:
        errors["description"] = "This field is required."
    elif len(text) > 200:
        errors["description"] = "At most 200 characters."

    code = None
    try:
        code = currency_code((currency or "").strip() or school.currency)
    except MoneyError as exc:
        errors["currency"] = str(exc)

    minor = None
    given = [value for value in (amount, amount_minor) if value not in (None, "")]
    if len(given) != 1:
        errors["amount"] = "Give the amount (major units) or amount_minor, not both." if given else "This field is required."
    elif amount_minor not in (None, ""):
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
            errors["amount_minor"] = "Must be a whole number of minor units."
        elif amount_minor > MAX_MINOR_AMOUNT:
            # The same refusal as for an amount typed in major units (core.money).
            errors["amount_minor"] = f"amount_minor {amount_minor} is implausibly large"
        else:
            minor = amount_minor
    elif code is not None:
        try:
            minor = parse_major_amount(amount.strip() if isinstance(amount, str) else amount, code)
        except MoneyError as exc:
            errors["amount"] = str(exc)
    if minor is not None and minor <= 0:
        errors["amount_minor" if amount_minor not in (None, "") else "amount"] = "Must be greater than zero."
        minor = None

    due = None
    if isinstance(due_date, datetime):
        errors["due_date"] = "Give a date (YYYY-MM-DD), not a time."
    elif isinstance(due_date, date):
        due = due_date
    elif isinstance(due_date, str) and due_date.strip():
        try:
            due = date.fromisoformat(due_date.strip())
        except ValueError:
            errors["due_date"] = f"{due_date.strip()!r} is not a date (YYYY-MM-DD)."

    email, phone = "", ""
    try:
        email = parent_email_clean(parent_email)
    except ContactInvalid as exc:
        errors["parent_email"] = str(exc)
    try:
        phone = parent_phone_clean(parent_phone)
    except ContactInvalid as exc:
        errors["parent_phone"] = str(exc)

    if errors:
        raise PaymentRequestInvalid(errors)
    return PaymentRequestDraft(
        student=student, description=text, amount_minor=minor, currency=code, due_date=due,
        parent_email=email, parent_phone=phone,
    )  # fmt: skip




def payment_request_create(*, school: School, draft: PaymentRequestDraft, actor=None) -> PaymentRequest:
    """Save one payment request and its audit entry; it gets its pay-link token here."""
    return payment_requests_create_many(school=school, drafts=[draft], actor=actor)[0]


def payment_requests_create_many(
    *, school: School, drafts: list[PaymentRequestDraft], actor=None, source: str = "staff"
) -> list[PaymentRequest]:
    """Save checked drafts all together or not at all (one transaction)."""
    if any(draft.student.school_id != school.pk for draft in drafts):
        raise PaymentRequestInvalid({"student_id": "The student belongs to another school."})
    actor_name = getattr(actor, "username", "") or "system"
    with transaction.atomic():
        requests = [
            PaymentRequest(
                school=school,
                student=draft.student,
                description=draft.description,
                amount_minor=draft.amount_minor,
                currency=draft.currency,
                due_date=draft.due_date,
                parent_email=draft.parent_email,
                parent_phone=draft.parent_phone,
                created_by=actor if getattr(actor, "pk", None) else None,
            )
            for draft in drafts
        ]
        # Saved one by one: bulk_create does not return ids on every database, and imports are
        # a few thousand rows at most.
        for payment_request in requests:
            payment_request.save()
        AuditLog.objects.bulk_create(
            audit_entry(
                action="payment_request.created",
                actor_type=AuditLog.ActorType.STAFF if actor is not None else AuditLog.ActorType.SYSTEM,
                actor=actor_name,
                school_id=school.pk,
                target=payment_request,
                details={
                    "student_number": payment_request.student.student_number,
                    "amount_minor": payment_request.amount_minor,
                    "currency": payment_request.currency,
                    "source": source,
                },
            )
            for payment_request in requests
        )
    return requests


def payment_request_cancel(*, payment_request_id: int, actor) -> PaymentRequest:
    """Staff withdraw an open request. Money that still arrives for it is kept and flagged."""
    with transaction.atomic():
        payment_request = PaymentRequest.objects.select_for_update(no_key=True).get(pk=payment_request_id)
        if payment_request.status == PaymentRequest.Status.CANCELLED:
            return payment_request
        if payment_request.status != PaymentRequest.Status.OPEN:
            raise PaymentRequestStateError(f"A {payment_request.status} request cannot be cancelled.")
        payment_request.status = PaymentRequest.Status.CANCELLED
        payment_request.cancelled_at = timezone.now()
        payment_request.save(update_fields=["status", "cancelled_at", "updated_at"])
        audit_record(
            action="payment_request.cancelled",
            actor_type=AuditLog.ActorType.STAFF,
            actor=getattr(actor, "username", "") or "",
            school_id=payment_request.school_id,
            target=payment_request,
        )
    return payment_request


# CSV import: one row per request. ``student_id`` is the school's student number; ``amount`` is
# in major units; ``currency`` may be blank (the school's); ``due_date`` is YYYY-MM-DD or blank;
# ``parent_email`` and ``parent_phone`` are optional columns.
CSV_COLUMNS = ("student_id", "description", "amount", "currency", "due_date", "parent_email", "parent_phone")
CSV_REQUIRED_COLUMNS = ("student_id", "description", "amount")
CSV_MAX_ROWS = 5000
CSV_MAX_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class CsvRowError:
    line: int  # the line number in the file, header = 1
    field: str
    message: str


@dataclass
class CsvImportResult:
    created: list[PaymentRequest] = field(default_factory=list)
    errors: list[CsvRowError] = field(default_factory=list)
    rows: int = 0


def payment_requests_import_csv(*, school: School, data: bytes, actor=None) -> CsvImportResult:
    """Check every row first; create all requests in one transaction only when no row has an
    error. Nothing is half-imported: any error means nothing is saved, and every error is
    reported with its line and column."""
    result = CsvImportResult()
    if len(data) > CSV_MAX_BYTES:
        result.errors.append(CsvRowError(0, "(file)", f"The file is larger than {CSV_MAX_BYTES // 1024} KB."))
        return result
    try:
        text = data.decode("utf-8-sig")  # Excel writes a byte-order mark
    except UnicodeDecodeError:
        result.errors.append(CsvRowError(0, "(file)", "The file is not UTF-8 text. Save it as CSV UTF-8."))
        return result
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [(name or "").strip().lower() for name in (reader.fieldnames or [])]
    missing = [name for name in CSV_REQUIRED_COLUMNS if name not in header]
    if missing:
        result.errors.append(
            CsvRowError(1, "(header)", f"Missing column(s): {', '.join(missing)}. Expected: {', '.join(CSV_COLUMNS)}.")
        )
        return result
    reader.fieldnames = header
    students = {student.student_number: student for student in Student.objects.filter(school=school)}
    drafts: list[PaymentRequestDraft] = []
    try:
        for row in reader:
            line = reader.line_num
            if not any((value or "").strip() for key, value in row.items() if key is not None):
                continue  # a blank line
            result.rows += 1
            if result.rows > CSV_MAX_ROWS:
                result.errors.append(CsvRowError(line, "(file)", f"More than {CSV_MAX_ROWS} rows; split the file."))
                break
            if row.get(None):
                result.errors.append(CsvRowError(line, "(row)", "More values than columns."))
                continue
            try:
                drafts.append(
                    payment_request_draft(
                        school=school,
                        student_number=row.get("student_id") or "",
                        description=row.get("description") or "",
                        amount=row.get("amount") or "",
                        currency=row.get("currency") or "",
                        due_date=row.get("due_date") or "",
                        parent_email=row.get("parent_email") or "",
                        parent_phone=row.get("parent_phone") or "",
                        students=students,
                    )
                )
            except PaymentRequestInvalid as exc:
                result.errors.extend(CsvRowError(line, name, message) for name, message in exc.errors.items())
    except csv.Error as exc:
        result.errors.append(CsvRowError(reader.line_num, "(file)", f"Not a readable CSV file: {exc}"))
    if not result.errors and not drafts:
        result.errors.append(CsvRowError(0, "(file)", "The file has no rows."))
    if result.errors:
        return result
    result.created = payment_requests_create_many(school=school, drafts=drafts, actor=actor, source="csv")
    return result


# --- Finalizing: a success settles its request ----------------------------------------------------


@dataclass(frozen=True)
class FinalizeOutcome:
    result: Literal["paid", "amount_mismatch", "overpayment", "already_finalized"]
    reason: str

    @property
    def summary(self) -> str:
        return "request paid" if self.result == "paid" else f"request not settled: {self.result}"


def payment_finalize(*, payment: Payment, actor_type: str, actor: str = "") -> FinalizeOutcome:
    """Settle the payment request of a payment that has just succeeded.

    Runs inside the caller's transaction with the payment row locked (every path that makes a
    payment succeed comes here: webhooks, API confirmations, the janitor, staff confirming a
    manual payment). Locks the request row, then:

    - amount and currency exactly as requested, request open: the request is paid by this
      payment, in this transaction;
    - a different amount or currency: the request stays open, the payment is flagged
      ``amount_mismatch`` for staff;
    - the request is already paid by another payment (or cancelled): the money is kept, the
      payment is flagged ``overpayment`` for staff.

    Every outcome writes ``payment.finalize`` with the reason.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("payment_finalize runs inside the caller's transaction, payment row locked")
    # Lock order everywhere: payment, then its request.
    payment_request = PaymentRequest.objects.select_for_update(no_key=True).get(pk=payment.payment_request_id)
    paid = format_minor(payment.amount_minor, payment.currency)
    due = format_minor(payment_request.amount_minor, payment_request.currency)
    flag = ""
    if payment_request.status == PaymentRequest.Status.PAID and payment_request.paid_payment_id == payment.pk:
        return FinalizeOutcome("already_finalized", "this payment already settled the request")
    if payment_request.status == PaymentRequest.Status.PAID:
        outcome = FinalizeOutcome(
            "overpayment", f"{paid} received, but the request was already paid by payment {payment_request.paid_payment_id}"
        )
        flag = ReviewFlag.OVERPAYMENT
    elif payment_request.status == PaymentRequest.Status.CANCELLED:
        outcome = FinalizeOutcome("overpayment", f"{paid} received for a cancelled request")
        flag = ReviewFlag.OVERPAYMENT
    elif (payment.amount_minor, payment.currency) != (payment_request.amount_minor, payment_request.currency):
        outcome = FinalizeOutcome("amount_mismatch", f"{paid} received, {due} requested")
        flag = ReviewFlag.AMOUNT_MISMATCH
    else:
        outcome = FinalizeOutcome("paid", f"{paid} received as requested")
        payment_request.status = PaymentRequest.Status.PAID
        payment_request.paid_payment = payment
        payment_request.paid_at = timezone.now()
        payment_request.save(update_fields=["status", "paid_payment", "paid_at", "updated_at"])
        audit_record(
            action="payment_request.paid",
            actor_type=actor_type,
            actor=actor,
            school_id=payment_request.school_id,
            target=payment_request,
            details={"payment_id": str(payment.pk)},
        )
    if flag:
        payment.review_flag = flag
        payment.review_flag_reason = outcome.reason
        payment.save(update_fields=["review_flag", "review_flag_reason", "updated_at"])
    audit_record(
        action="payment.finalize",
        actor_type=actor_type,
        actor=actor,
        school_id=payment.school_id,
        target=payment,
        details={
            "result": outcome.result,
            "reason": outcome.reason,
            "payment_request_id": payment_request.pk,
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
            "requested_minor": payment_request.amount_minor,
            "requested_currency": payment_request.currency,
        },
    )
    return outcome


# --- Checkout: "Pay now" ---------------------------------------------------------------------------


class CheckoutRefused(Exception):
    """The checkout was not started. ``code`` says why; ``detail`` is safe to show the payer;
    ``payment`` is the attempt already under way, when that is the reason."""

    def __init__(self, code: str, detail: str, payment: Payment | None = None):
        self.code = code
        self.detail = detail
        self.payment = payment
        super().__init__(detail)


class CheckoutFailed(Exception):
    """The provider could not start the payment. ``detail`` is safe to show the payer."""

    def __init__(self, detail: str, payment: Payment):
        self.detail = detail
        self.payment = payment
        super().__init__(detail)


@dataclass(frozen=True)
class CheckoutStarted:
    payment: Payment
    redirect_url: str  # where to send the payer; empty when a prompt went to their phone
    prompt_sent: bool
    message: str
    reused: bool  # a second click: the checkout already under way, not a new one




def checkout_return_urls(*, payment: Payment, payment_request: PaymentRequest) -> ReturnUrls:
    base = settings.PUBLIC_BASE_URL
    return ReturnUrls(
        success_url=base + reverse("payment-thanks", args=[payment.pk]),
        cancel_url=base + reverse("pay", args=[payment_request.token]),
        callback_url=base
        + reverse("webhook-receive-school", kwargs={"provider": payment.provider, "school_code": payment.school.code}),
    )


def _new_reference(prefix: str) -> str:
    # 12 characters: M-Pesa's AccountReference is at most 12. 55 random bits; the unique
    # constraint on Payment.reference settles the (unlikely) collision.
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(11))


def payment_checkout_start(
    *,
    payment_request_id: int,
    provider: str,
    payer: Mapping[str, Any] | None = None,
    actor_type: str = AuditLog.ActorType.PARENT,
    actor: str = "",
) -> CheckoutStarted:
    """"Pay now": create the payment intent, ask the provider for a checkout, return where to
    send the payer.

    One request cannot be paid twice by a double click or two tabs. Deciding happens under a
    lock on the request row: an attempt with the same provider already under way is reused
    (its checkout URL, or its prompt), one still being created is waited for (up to
    ``CHECKOUT_WAIT_SECONDS``), and one with another provider refuses the new checkout until
    the payer gives it up (``payment_checkout_abandon``). The provider call happens after that
    lock is released. Raises ``CheckoutRefused`` or ``CheckoutFailed``.
    """
    try:
        adapter = get_provider(provider)
    except UnknownProvider as exc:
        raise CheckoutRefused("provider_unknown", "This way of paying is not available.") from exc
    payer = {key: value for key, value in dict(payer or {}).items() if value not in (None, "")}
    needs_phone, needs_email = selectors.provider_needs_phone(adapter), selectors.provider_needs_email(adapter)
    if needs_phone or needs_email:
        # What the payer typed wins; else the contact staff gave the request.
        contact = PaymentRequest.objects.filter(pk=payment_request_id).values("parent_email", "parent_phone").first() or {}
        payer.setdefault("email", contact.get("parent_email") or "")
        payer.setdefault("phone", contact.get("parent_phone") or "")
    if needs_phone:
        try:
            payer["phone"] = normalize_mpesa_phone(str(payer.get("phone") or ""))
        except PhoneInvalid as exc:
            raise CheckoutRefused("phone_invalid", str(exc)) from exc
    if needs_email or payer.get("email"):
        if not payer.get("email"):
            raise CheckoutRefused(
                "email_required", f"Enter your email address: {adapter.display_name} needs it to take the payment."
            )
        try:
            payer["email"] = parent_email_clean(str(payer["email"]))
        except ContactInvalid as exc:
            raise CheckoutRefused("email_invalid", str(exc)) from exc
    payer = {key: value for key, value in payer.items() if value}

    deadline = time.monotonic() + settings.CHECKOUT_WAIT_SECONDS
    while True:
        decision, payment = _checkout_decide(
            payment_request_id=payment_request_id, adapter=adapter, payer=payer, actor_type=actor_type, actor=actor
        )
        if decision == "reuse":
            return CheckoutStarted(
                payment=payment,
                redirect_url=payment.checkout_url,
                prompt_sent=bool(payment.provider_data.get("prompt_sent")),
                message=payment.provider_data.get("checkout_message", ""),
                reused=True,
            )
        if decision == "create":
            break
        if decision == "supersede":
            _payment_supersede(payment_id=payment.pk, actor_type=actor_type, actor=actor)
            continue
        # "wait": another click is asking the provider right now; reuse its answer.
        if time.monotonic() >= deadline:
            raise CheckoutRefused(
                "checkout_in_progress", "Your payment is being started. Wait a moment, then try again.", payment
            )
        time.sleep(0.2)

    payment_request = payment.payment_request
    try:
        result = adapter.create_checkout(
            payment=payment, return_urls=checkout_return_urls(payment=payment, payment_request=payment_request)
        )
    except ProviderUnavailable as exc:
        # The provider may have started it anyway (a timeout): the payment stays open for the
        # janitor to ask about, but the payer may start another one.
        _payment_checkout_error(payment_id=payment.pk, error=exc.detail, fail=False)
        raise CheckoutFailed(f"{adapter.display_name} is not answering. Please try again in a few minutes.", payment) from exc
    except (ProviderRejected, OperationNotSupported) as exc:
        _payment_checkout_error(payment_id=payment.pk, error=exc.detail, fail=True)
        raise CheckoutFailed(f"{adapter.display_name} could not start this payment.", payment) from exc
    except Exception as exc:
        logger.exception("create_checkout of %s failed for payment %s", adapter.slug, payment.pk)
        _payment_checkout_error(payment_id=payment.pk, error=f"{type(exc).__name__}: {exc}", fail=False)
        raise CheckoutFailed(f"{adapter.display_name} could not start this payment.", payment) from exc
    payment = _payment_checkout_record(payment_id=payment.pk, result=result, actor_type=actor_type, actor=actor)
    return CheckoutStarted(
        payment=payment,
        redirect_url=result.redirect_url,
        prompt_sent=result.prompt_sent,
        message=result.message,
        reused=False,
    )


def _checkout_decide(
    *, payment_request_id: int, adapter, payer: dict, actor_type: str, actor: str
) -> tuple[Literal["reuse", "wait", "supersede", "create"], Payment]:
    """Under the request's row lock: reuse or wait for an attempt under way, refuse a new one
    beside it, name one to supersede, or create the payment intent (audit ``payment.intent``).
    One short transaction, no network.

    Lock order is payment, then request, everywhere (``payment_finalize`` holds a payment's lock
    when it takes its request's); so this, holding the request's lock, locks no payment: the
    request lock alone serializes every checkout of the request, and a superseded attempt is
    cancelled in its own transaction (``_payment_supersede``).
    """
    now = timezone.now()
    with transaction.atomic():
        try:
            payment_request = (
                PaymentRequest.objects.select_for_update(no_key=True, of=("self",))
                .select_related("school", "student")
                .get(pk=payment_request_id)
            )
        except PaymentRequest.DoesNotExist as exc:
            raise CheckoutRefused("request_unknown", "This pay link is not valid.") from exc
        if payment_request.status == PaymentRequest.Status.PAID:
            raise CheckoutRefused("request_paid", "This has already been paid.")
        if payment_request.status != PaymentRequest.Status.OPEN or not payment_request.school.active:
            raise CheckoutRefused("request_closed", "This payment request is no longer open.")
        account = AggregatorAccount.objects.filter(
            school_id=payment_request.school_id, provider=adapter.slug, active=True
        ).first()
        if account is None or not selectors.provider_supports_checkout(adapter):
            raise CheckoutRefused("provider_unavailable", "This way of paying is not available for this school.")

        for attempt in payment_request.payments.filter(
            method=PaymentMethod.PROVIDER, status__in=IN_FLIGHT_STATES
        ).order_by("created_at"):
            if _attempt_superseded(attempt, now):
                return "supersede", attempt
            if attempt.provider != adapter.slug:
                raise CheckoutRefused(
                    "another_checkout_in_progress",
                    f"A payment with {selectors.provider_display_name(attempt.provider)} is already under way.",
                    attempt,
                )
            ready = attempt.checkout_created_at is not None or attempt.checkout_error
            return ("reuse" if ready else "wait"), attempt

        payment = Payment(
            school_id=payment_request.school_id,
            account=account,
            provider=adapter.slug,
            amount_minor=payment_request.amount_minor,
            currency=payment_request.currency,
            status=S.PENDING,
            status_changed_at=now,
            payment_request=payment_request,
            method=PaymentMethod.PROVIDER,
            # The pay link names the student: nothing to look up in the School Directory.
            student=payment_request.student,
            provider_student_id=payment_request.student.student_number,
            mapping_status=MappingStatus.MAPPED,
            payer=payer,
            next_check_at=_recheck_time(now, 0),
        )
        _payment_insert_with_reference(payment, prefix="P")
        audit_record(
            action="payment.intent",
            actor_type=actor_type,
            actor=actor,
            school_id=payment.school_id,
            target=payment,
            details={
                "payment_request_id": payment_request.pk,
                "provider": adapter.slug,
                "reference": payment.reference,
                "amount_minor": payment.amount_minor,
                "currency": payment.currency,
            },
        )
    payment.payment_request = payment_request
    return "create", payment


def _attempt_superseded(attempt: Payment, now: datetime) -> bool:
    """An attempt the payer never got a checkout for (the provider failed, or the process asking
    it died) does not block a new one. Only while pending: once the provider is processing it,
    money may be moving."""
    if attempt.status != S.PENDING:
        return False
    stale = now - timedelta(seconds=settings.CHECKOUT_STALE_SECONDS)
    return bool(attempt.checkout_error) or (attempt.checkout_created_at is None and attempt.created_at < stale)


def _payment_supersede(*, payment_id: uuid.UUID, actor_type: str, actor: str) -> None:
    """Cancel an attempt superseded by a new checkout (it stays on the janitor's list)."""
    with transaction.atomic():
        attempt = Payment.objects.select_for_update(no_key=True, of=("self",)).get(pk=payment_id)
        if _attempt_superseded(attempt, timezone.now()):
            reason = attempt.checkout_error or "the checkout was never created"
            _payment_abandon_locked(attempt, reason=f"superseded: {reason}", actor_type=actor_type, actor=actor)


def _payment_insert_with_reference(payment: Payment, *, prefix: str) -> None:
    """Insert a new payment with a fresh reference; a (very unlikely) duplicate reference is
    settled by the unique constraint and another draw."""
    for attempt in range(3):
        payment.reference = _new_reference(prefix)
        try:
            with transaction.atomic():
                payment.save(force_insert=True)
            return
        except IntegrityError:
            if attempt == 2 or not Payment.objects.filter(reference=payment.reference).exists():
                raise


def _payment_checkout_record(*, payment_id: uuid.UUID, result: CheckoutResult, actor_type: str, actor: str) -> Payment:
    """Save what the provider answered: its checkout id, transaction id, data, the URL."""
    now = timezone.now()
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True, of=("self",)).select_related(
            "school", "payment_request"
        ).get(pk=payment_id)
        if result.checkout_id:
            payment.provider_checkout_id = result.checkout_id
        if result.external_txn_id and not payment.external_txn_id:
            payment.external_txn_id = result.external_txn_id
        payment.provider_data = {
            **payment.provider_data,
            **dict(result.provider_data),
            "prompt_sent": result.prompt_sent,
            "checkout_message": result.message,
        }
        payment.checkout_url = result.redirect_url
        payment.checkout_created_at = now
        # The janitor's schedule counts from the moment the payer could start paying.
        payment.next_check_at = _recheck_time(now, 0) if payment.status in RECHECKABLE_STATES else None
        payment.save(
            update_fields=[
                "provider_checkout_id",
                "external_txn_id",
                "provider_data",
                "checkout_url",
                "checkout_created_at",
                "next_check_at",
                "updated_at",
            ]
        )
        audit_record(
            action="payment.checkout",
            actor_type=actor_type,
            actor=actor,
            school_id=payment.school_id,
            target=payment,
            details={
                "provider": payment.provider,
                "checkout_id": result.checkout_id,
                "prompt_sent": result.prompt_sent,
            },
        )
    return payment


def _payment_checkout_error(*, payment_id: uuid.UUID, error: str, fail: bool) -> None:
    """The provider did not give us a checkout. ``fail``: it refused, so nothing can have been
    started and the payment fails; otherwise it may have started anyway, so the payment stays
    open for the janitor (it no longer blocks a new checkout)."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True, of=("self",)).get(pk=payment_id)
        payment.checkout_error = error[:2000] or "error"
        payment.save(update_fields=["checkout_error", "updated_at"])
        details = {"error": error[:500]}
        if fail:
            payment_fact_add(
                payment=payment, status=S.FAILED, source=FactSource.SYSTEM, source_ref="checkout refused",
                actor_type=AuditLog.ActorType.SYSTEM, actor=payment.provider, audit_action="payment.checkout_failed",
                details=details,
            )  # fmt: skip
        else:
            audit_record(
                action="payment.checkout_failed",
                actor_type=AuditLog.ActorType.SYSTEM,
                actor=payment.provider,
                school_id=payment.school_id,
                target=payment,
                details={**details, "from": payment.status, "to": payment.status},
            )


def payment_checkout_abandon(*, payment_id: uuid.UUID, payment_request_id: int, actor_type: str, actor: str = "") -> Payment:
    """The payer gives up a checkout under way to choose another way to pay. Only a payment
    the provider has not started processing; it is cancelled here, and stays on the janitor's
    list: money that still arrives for it is taken (a confirmed success outranks a
    cancellation) and flagged if the request was paid another way meanwhile."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True, of=("self",)).get(
            pk=payment_id, payment_request_id=payment_request_id
        )
        if payment.method != PaymentMethod.PROVIDER or payment.status not in IN_FLIGHT_STATES:
            return payment
        if payment.status != S.PENDING:
            raise CheckoutRefused(
                "checkout_processing", "The provider is already processing this payment; wait for its answer.", payment
            )
        _payment_abandon_locked(payment, reason="given up by the payer", actor_type=actor_type, actor=actor)
    return payment


def _payment_abandon_locked(payment: Payment, *, reason: str, actor_type: str, actor: str) -> None:
    payment_fact_add(
        payment=payment, status=S.CANCELLED, source=FactSource.SYSTEM, source_ref=reason, actor_type=actor_type,
        actor=actor, audit_action="payment.abandoned", details={"reason": reason},
    )  # fmt: skip


# --- Manual payments: reported by a parent, reviewed by staff ------------------------------------


class ManualPaymentInvalid(Exception):
    """``errors`` maps a form field to a message that is safe to show the parent."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))


class ReviewError(Exception):
    """The review cannot be recorded (already reviewed, not a manual payment, no note)."""


def manual_payment_submit(
    *,
    payment_request_id: int,
    method: str,
    manual_reference: str,
    amount_minor: int,
    receipt: UploadedFile | None = None,
    payer: Mapping[str, Any] | None = None,
) -> Payment:
    """A parent reports a bank transfer, mobile-money or cash payment. It waits as
    ``awaiting_review`` until staff confirm it (``manual_payment_review``); the request stays
    open meanwhile. A receipt, when given, must be a PDF or an image within the size limit."""
    errors: dict[str, str] = {}
    if method not in MANUAL_METHODS:
        errors["method"] = "Choose bank transfer, mobile money or cash."
    reference = (manual_reference or "").strip()
    if method != PaymentMethod.CASH and not reference:
        errors["reference"] = "Enter the reference of your transfer."
    if len(reference) > 128:
        errors["reference"] = "At most 128 characters."
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        errors["amount"] = "Enter the amount you paid."
    kind = None
    if receipt is not None:
        try:
            kind = receipts.receipt_check(receipt)
        except receipts.ReceiptInvalid as exc:
            errors["receipt"] = str(exc)
    if errors:
        raise ManualPaymentInvalid(errors)

    receipt_name = ""
    if receipt is not None and kind is not None:
        # Stored before the transaction: with object storage this is a network call, never made
        # while the request's row is locked. A refused report deletes it again.
        school_code = PaymentRequest.objects.filter(pk=payment_request_id).values_list("school__code", flat=True).get()
        receipt_name = receipts.receipt_store(school_code=school_code, file=receipt, kind=kind)
    try:
        return _manual_payment_insert(
            payment_request_id=payment_request_id,
            method=method,
            reference=reference,
            amount_minor=amount_minor,
            receipt_name=receipt_name,
            receipt_content_type=kind.content_type if receipt_name and kind else "",
            payer=payer,
        )
    except BaseException:
        if receipt_name:
            receipts.receipt_discard(receipt_name)
        raise


def _manual_payment_insert(
    *,
    payment_request_id: int,
    method: str,
    reference: str,
    amount_minor: int,
    receipt_name: str,
    receipt_content_type: str,
    payer: Mapping[str, Any] | None,
) -> Payment:
    with transaction.atomic():
        payment_request = (
            PaymentRequest.objects.select_for_update(no_key=True, of=("self",))
            .select_related("school", "student")
            .get(pk=payment_request_id)
        )
        if payment_request.status != PaymentRequest.Status.OPEN:
            raise CheckoutRefused("request_closed", "This payment request is no longer open.")
        waiting = payment_request.payments.filter(status=S.AWAITING_REVIEW).count()
        if waiting >= settings.MANUAL_PAYMENTS_PENDING_MAX:
            raise CheckoutRefused(
                "too_many_reports", "The school has not yet checked the payments you reported. Please wait for them."
            )
        now = timezone.now()
        payment = Payment(
            school=payment_request.school,
            account=None,
            provider=MANUAL_PROVIDER,
            amount_minor=amount_minor,
            currency=payment_request.currency,
            status=S.AWAITING_REVIEW,
            status_changed_at=now,
            payment_request=payment_request,
            method=method,
            manual_reference=reference,
            student=payment_request.student,
            provider_student_id=payment_request.student.student_number,
            mapping_status=MappingStatus.MAPPED,
            payer=dict(payer or {}),
        )
        if receipt_name:
            payment.receipt = receipt_name
            payment.receipt_content_type = receipt_content_type
        _payment_insert_with_reference(payment, prefix="M")
        audit_record(
            action="payment.manual_reported",
            actor_type=AuditLog.ActorType.PARENT,
            school_id=payment.school_id,
            target=payment,
            details={
                "payment_request_id": payment_request.pk,
                "method": method,
                "manual_reference": reference,
                "amount_minor": amount_minor,
                "currency": payment.currency,
                "receipt": receipt_content_type or None,
            },
        )
    return payment


def manual_payment_review(
    *, payment_id: uuid.UUID, decision: Literal["confirm", "reject"], note: str, reviewer
) -> Payment:
    """Staff confirm or reject a manual payment, with a note. A confirmation makes the payment
    succeed and settles its request through ``payment_finalize``, as a provider's success does;
    a rejection fails it and leaves the request open."""
    note = (note or "").strip()
    if decision not in ("confirm", "reject"):
        raise ReviewError("Choose confirm or reject.")
    if not note:
        raise ReviewError("Write a note: what you checked, or why you reject it.")
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True, of=("self",)).get(pk=payment_id)
        if not payment.is_manual:
            raise ReviewError("Only manual payments are reviewed here.")
        if payment.status != S.AWAITING_REVIEW:
            raise ReviewError(f"This payment was already reviewed ({payment.get_status_display().lower()}).")
        if not selectors.user_can_access_school(user=reviewer, school_id=payment.school_id):
            raise ReviewError("You are not staff of this payment's school.")
        payment.reviewed_by = reviewer
        payment.reviewed_at = timezone.now()
        payment.review_note = note
        payment.save(update_fields=["reviewed_by", "reviewed_at", "review_note", "updated_at"])
        # Confirming settles its request (payment_finalize), as a provider's success does.
        payment_fact_add(
            payment=payment,
            status=S.SUCCEEDED if decision == "confirm" else S.FAILED,
            amount_minor=payment.amount_minor if decision == "confirm" else None,
            source=FactSource.STAFF,
            source_ref=reviewer.get_username(),
            actor_type=AuditLog.ActorType.STAFF,
            actor=reviewer.get_username(),
            audit_action="payment.reviewed",
            details={"decision": decision, "note": note[:1000]},
        )
    return payment


# --- The janitor: payments whose webhook never came ------------------------------------------------

# Payments the janitor still asks about. A cancelled one was given up by the payer or superseded,
# but the provider may still take money for it.
RECHECKABLE_STATES = (S.PENDING, S.PROCESSING, S.CANCELLED)


def _recheck_time(start: datetime, checks_done: int) -> datetime | None:
    """When to ask the provider for the (checks_done + 1)-th time, counted from ``start``; None
    when the schedule is used up."""
    schedule = settings.PAYMENT_RECHECK_SCHEDULE_SECONDS
    if checks_done >= len(schedule):
        return None
    return start + timedelta(seconds=schedule[checks_done])


def payments_recheck_due(*, now: datetime | None = None, limit: int = 500) -> list[uuid.UUID]:
    """Celery beat: enqueue one status check per provider payment whose check is due.

    A payment is claimed by moving its ``next_check_at`` ahead (rows another janitor or a
    webhook holds are skipped, not waited for), so two janitors never ask twice at once.
    Payments settled meanwhile leave the schedule when they settle (``payment_settle``).
    """
    now = now or timezone.now()
    from payments.tasks import payment_status_recheck_task

    with transaction.atomic():
        due = Payment.objects.filter(
            next_check_at__lte=now, method=PaymentMethod.PROVIDER, account__isnull=False
        ).order_by("next_check_at")
        payment_ids = list(
            due.select_for_update(skip_locked=True, no_key=True, of=("self",)).values_list("pk", flat=True)[:limit]
        )
        Payment.objects.filter(pk__in=payment_ids).update(
            next_check_at=now + timedelta(seconds=settings.PAYMENT_RECHECK_CLAIM_SECONDS)
        )
        for payment_id in payment_ids:
            enqueue_on_commit(payment_status_recheck_task, str(payment_id))
    if payment_ids:
        logger.info("janitor: %d payments to re-check", len(payment_ids))
    return payment_ids


def payment_status_recheck(*, payment_id: uuid.UUID, now: datetime | None = None) -> str:
    """Ask the provider about one payment that is not settled (its webhook never came, or a
    refund is waiting for a success we have not heard of), and record the answer:

    - what the provider says is a fact like any other (``payment_provider_status_apply``): a
      payment the provider says is settled is settled;
    - still open: asked again at the next step of ``PAYMENT_RECHECK_SCHEDULE_SECONDS``; after
      the last one the payment expires (a success the provider confirms later is still taken);
    - provider unreachable through the whole schedule: flagged ``status_unknown`` for staff (the
      dashboard shows it) and still asked once per last interval, never expired on that account
      (we do not know what happened).

    The provider is asked with no lock held. Every check is audited (``payment.rechecked``).
    """
    payment = Payment.objects.select_related("account", "school").get(pk=payment_id)
    if payment.status in SETTLED_STATES or payment.account is None or payment.is_manual:
        Payment.objects.filter(pk=payment.pk).update(next_check_at=None)
        return "not open"
    adapter = get_provider(payment.provider)
    answer: NormalizedStatus | None = None
    error = ""
    unreachable = False
    try:
        answer = adapter.fetch_status(payment=payment)
    except ProviderUnavailable as exc:
        error, unreachable = exc.detail, True
    except ProviderError as exc:  # refused or not supported: the provider cannot tell us
        error = exc.detail
    except Exception as exc:  # a bug in an adapter must not stop the janitor for everyone
        logger.exception("fetch_status of %s failed for payment %s", payment.provider, payment.pk)
        error, unreachable = f"{type(exc).__name__}: {exc}", True

    note = "no answer"
    if answer is not None:
        note = f"provider says {answer.status}"
        says_more = answer.status not in (S.PENDING, payment.status) or answer.refunds or answer.refunded_total_minor
        if says_more:
            note = payment_provider_status_apply(payment_id=payment.pk, status=answer, source="janitor").note

    now = now or timezone.now()
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True, of=("self",)).get(pk=payment_id)
        payment.status_checks += 1
        payment.last_check_error = error[:2000]
        changed = {"status_checks", "last_check_error", "next_check_at", "updated_at"}
        expire = False
        if payment.status in SETTLED_STATES:
            payment.next_check_at = None
        else:
            start = payment.checkout_created_at or payment.created_at
            # Times are counted from the checkout, so a janitor that was down catches up at once.
            payment.next_check_at = _recheck_time(start, payment.status_checks)
            if payment.next_check_at is None:
                if unreachable:
                    payment.next_check_at = now + timedelta(seconds=settings.PAYMENT_RECHECK_SCHEDULE_SECONDS[-1])
                    if payment.review_flag != ReviewFlag.STATUS_UNKNOWN:
                        payment.review_flag = ReviewFlag.STATUS_UNKNOWN
                        payment.review_flag_reason = (
                            f"{adapter.display_name} could not be asked about this payment through "
                            f"{payment.status_checks} checks: {error[:300]}"
                        )
                        changed |= {"review_flag", "review_flag_reason"}
                elif payment.status in IN_FLIGHT_STATES:
                    expire = True
        payment.save(update_fields=sorted(changed))
        audit_record(
            action="payment.rechecked",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor="janitor",
            school_id=payment.school_id,
            target=payment,
            details={
                "check": payment.status_checks,
                "answer": str(answer.status) if answer else None,
                "error": error[:500],
                "note": note,
                "status": payment.status,
                "next_check_at": payment.next_check_at.isoformat() if payment.next_check_at else None,
            },
        )
        if expire:
            payment_fact_add(
                payment=payment, status=S.EXPIRED, source=FactSource.SYSTEM, source_ref="janitor",
                actor_type=AuditLog.ActorType.SYSTEM, actor="janitor", audit_action="payment.expired",
                details={"checks": payment.status_checks, "reason": "still open after the last scheduled check"},
            )  # fmt: skip
    return "expired" if expire else note


# --- The dummy provider's checkout page ------------------------------------------------------------


def dummy_payment_simulate(
    *, payment_id: uuid.UUID, outcome: Literal["succeeded", "failed"], amount_minor: int | None = None
) -> Payment:
    """Record what the payer did on the dummy provider's checkout page: this is the dummy
    "provider's" own state, which its ``fetch_status`` reads back. The first answer is final,
    as at a real provider (a double click does not pay twice)."""
    if outcome not in ("succeeded", "failed"):
        raise ValueError(f"unknown outcome {outcome!r}")
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True, of=("self",)).select_related("account").get(
            pk=payment_id, provider="dummy", method=PaymentMethod.PROVIDER
        )
        if "dummy" not in payment.provider_data:
            payment.provider_data = {
                **payment.provider_data,
                "dummy": {
                    "outcome": outcome,
                    "txn_id": f"dtxn_{secrets.token_hex(8)}",
                    "amount_minor": payment.amount_minor if amount_minor is None else amount_minor,
                    "currency": payment.currency,
                    "at": timezone.now().isoformat(),
                },
            }
            payment.save(update_fields=["provider_data", "updated_at"])
    return payment


# --- Staff refunds -------------------------------------------------------------------------------
#
# A refund is recorded (RefundRequest) before the provider is asked, the provider is asked with no
# lock held, and its answer becomes a refund fact of the ledger keyed by the provider's id for the
# refund. The money counts when a fact of that key says succeeded, whoever says it first (the
# answer, the provider's API asked later, or its webhook), and once. The request only follows.

# The source_ref of a fact that closes a refund key because another key of the same refund counts
# (a provider reported one refund under two keys): failed, so its money counts once.
SAME_REFUND_AS = "same refund as "
REFUND_REASON_MAX_CHARS = 500


class RefundInvalid(Exception):
    """Input that cannot become a refund; ``errors`` maps a field to a message for staff."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))


class RefundRefused(Exception):
    """The refund cannot be made now. ``code`` says why; ``detail`` is for staff."""

    def __init__(self, code: str, detail: str, refund_request: RefundRequest | None = None):
        self.code = code
        self.detail = detail
        self.refund_request = refund_request
        super().__init__(detail)


@dataclass(frozen=True)
class RefundStarted:
    refund_request: RefundRequest
    created: bool  # False: the caller's Idempotency-Key named a refund already made


def refund_adapter(*, payment: Payment):
    """The adapter whose refund API refunds ``payment``, or None: a manual payment, or a provider
    without a refund API (SurePay, M-Pesa, the dummy), is refunded by hand."""
    if payment.is_manual or payment.account_id is None:
        return None
    try:
        adapter = get_provider(payment.provider)
    except UnknownProvider:
        return None
    return adapter if selectors.provider_supports_refund(adapter) else None


def refund_request_create(
    *,
    payment_id: uuid.UUID,
    reason: str,
    actor,
    amount: str | None = None,
    amount_minor: int | None = None,
    client_key: str = "",
) -> RefundStarted:
    """Staff refund ``amount_minor`` of a payment, with a reason.

    Under the payment's row lock: refused beyond what is left (received, less refunded, charged
    back and refunds asked for and not failed), while a dispute is open, and while another refund
    of the payment waits for its provider's answer; then the request is recorded (audit
    ``refund.requested``). A provider with a refund API is then asked, with no lock held
    (``refund_request_send``); a refund made by hand is recorded at once as a staff fact keyed
    ``manual:<request id>``. The amount is ``amount`` in major units of the payment's currency
    (``"120,000"``, parsed strictly) or ``amount_minor``. ``client_key`` (the API's
    Idempotency-Key) makes a repeated call answer the first request. Raises ``RefundInvalid``
    (bad input) or ``RefundRefused``.
    """
    errors: dict[str, str] = {}
    reason = (reason or "").strip()
    if not reason:
        errors["reason"] = "Say why the money goes back."
    elif len(reason) > REFUND_REASON_MAX_CHARS:
        errors["reason"] = f"At most {REFUND_REASON_MAX_CHARS} characters."
    client_key = (client_key or "").strip()
    if len(client_key) > 255:
        errors["idempotency_key"] = "At most 255 characters."
    actor_name = actor.get_username()
    with transaction.atomic():
        payment = (
            Payment.objects.select_for_update(no_key=True, of=("self",))
            .select_related("account", "school")
            .get(pk=payment_id)
        )
        if not selectors.user_can_access_school(user=actor, school_id=payment.school_id):
            raise RefundRefused("not_your_school", "You are not staff of this payment's school.")
        amount_minor = _refund_amount(amount=amount, amount_minor=amount_minor, currency=payment.currency, errors=errors)
        if errors:
            raise RefundInvalid(errors)
        if client_key:
            existing = RefundRequest.objects.filter(payment=payment, client_key=client_key).first()
            if existing is not None:
                if (existing.amount_minor, existing.reason) != (amount_minor, reason):
                    raise RefundRefused(
                        "idempotency_key_reused",
                        "This Idempotency-Key was already used for another refund of this payment.",
                        existing,
                    )
                return RefundStarted(existing, created=False)
        adapter = refund_adapter(payment=payment)
        _refund_check_allowed(payment=payment, amount_minor=amount_minor)
        refund_request = RefundRequest(
            id=uuid.uuid4(),
            school_id=payment.school_id,
            payment=payment,
            method=RefundRequest.Method.PROVIDER if adapter else RefundRequest.Method.MANUAL,
            amount_minor=amount_minor,
            currency=payment.currency,
            reason=reason,
            client_key=client_key,
            requested_by=actor if getattr(actor, "pk", None) else None,
            requested_by_name=actor_name,
        )
        refund_request.idempotency_key = f"refund-{refund_request.id.hex}"
        if adapter is None:
            refund_request.ledger_key = f"manual:{refund_request.id}"
        try:
            with transaction.atomic():
                refund_request.save(force_insert=True)
        except IntegrityError as exc:  # the payment's lock makes this a backstop only
            raise RefundRefused("refund_in_progress", "Another refund of this payment is being made.") from exc
        audit_record(
            action="refund.requested",
            actor_type=AuditLog.ActorType.STAFF,
            actor=actor_name,
            school_id=payment.school_id,
            target=refund_request,
            details={
                "payment_id": str(payment.pk),
                "provider": payment.provider,
                "method": refund_request.method,
                "amount_minor": amount_minor,
                "currency": payment.currency,
                "reason": reason,
            },
        )
        if adapter is None:
            # Made by hand (cash, bank transfer): staff's word is the fact.
            _refund_fact_record(
                payment=payment,
                key=refund_request.ledger_key,
                status=RefundStatus.SUCCEEDED,
                amount_minor=amount_minor,
                source=FactSource.STAFF,
                source_ref=actor_name,
                actor_type=AuditLog.ActorType.STAFF,
                actor=actor_name,
                details={"refund_request": str(refund_request.pk), "reason": reason, "method": "manual"},
            )
            refund_request.refresh_from_db()
            return RefundStarted(refund_request, created=True)
    return RefundStarted(refund_request_send(refund_request_id=refund_request.pk), created=True)


def _refund_amount(*, amount: str | None, amount_minor: int | None, currency: str, errors: dict[str, str]) -> int:
    """The refund's amount in minor units, from exactly one of ``amount`` (major units, parsed
    strictly for the currency) and ``amount_minor``; a problem goes into ``errors``."""
    given = [value for value in (amount, amount_minor) if value not in (None, "")]
    if len(given) != 1:
        errors["amount"] = "Give the amount (major units) or amount_minor, not both." if given else "This field is required."
        return 0
    if amount_minor not in (None, ""):
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
            errors["amount_minor"] = "Must be a whole number of minor units."
            return 0
        field_name, minor = "amount_minor", amount_minor
    else:
        field_name = "amount"
        try:
            minor = parse_major_amount(amount.strip() if isinstance(amount, str) else amount, currency)
        except MoneyError as exc:
            errors["amount"] = str(exc)
            return 0
    if minor <= 0:
        errors[field_name] = "Must be greater than zero."
    elif minor > MAX_MINOR_AMOUNT:
        errors[field_name] = f"amount_minor {minor} is implausibly large"
    return minor


def _refund_check_allowed(*, payment: Payment, amount_minor: int) -> None:
    """Inside the caller's transaction, the payment row locked."""
    if payment.status == S.DISPUTED:
        raise RefundRefused(
            "payment_disputed", "A dispute of this payment is open: the provider holds the money until it is decided."
        )
    if payment.status not in SETTLED_STATES:
        raise RefundRefused(
            "payment_not_refundable",
            f"Only money the school received can be refunded; this payment is {payment.get_status_display().lower()}.",
        )
    unanswered = RefundRequest.objects.filter(
        payment=payment, status__in=(RefundRequest.Status.REQUESTED, RefundRequest.Status.IN_DOUBT)
    ).first()
    if unanswered is not None:
        raise RefundRefused(
            "refund_in_progress",
            "Another refund of this payment is waiting for the provider's answer"
            + (": its answer was lost, check it first." if unanswered.status == RefundRequest.Status.IN_DOUBT else "."),
            unanswered,
        )
    balance = selectors.payment_refund_balance(payment=payment)
    if amount_minor > balance.left_minor:
        money = lambda minor: format_minor(minor, balance.currency)  # noqa: E731
        parts = [f"{money(balance.received_minor)} received"]
        if balance.refunded_minor:
            parts.append(f"{money(balance.refunded_minor)} refunded")
        if balance.charged_back_minor:
            parts.append(f"{money(balance.charged_back_minor)} charged back")
        if balance.on_the_way_minor:
            parts.append(f"{money(balance.on_the_way_minor)} of refunds on their way")
        raise RefundRefused(
            "refund_exceeds_balance",
            f"At most {money(balance.left_minor)} can be refunded ({', '.join(parts)}).",
        )


def refund_request_send(*, refund_request_id: uuid.UUID) -> RefundRequest:
    """Ask the provider for a recorded refund and record its answer. No lock is held during the
    call. A refusal fails the request (nothing was refunded); an answer that never arrived
    leaves it ``in_doubt``: the refund may or may not have been made."""
    refund_request = RefundRequest.objects.select_related("payment__account", "payment__school").get(
        pk=refund_request_id
    )
    if refund_request.status != RefundRequest.Status.REQUESTED:
        return refund_request
    payment = refund_request.payment
    adapter = get_provider(payment.provider)
    try:
        result = adapter.refund(
            payment=payment,
            amount_minor=refund_request.amount_minor,
            idempotency_key=refund_request.idempotency_key,
            reason=refund_request.reason,
        )
    except ProviderUnavailable as exc:
        return _refund_request_unanswered(refund_request_id=refund_request.pk, error=exc.detail)
    except (ProviderRejected, OperationNotSupported) as exc:
        return _refund_request_refused(refund_request_id=refund_request.pk, error=exc.detail)
    except Exception as exc:  # a bug in an adapter: whether the provider got the request is unknown
        logger.exception("refund of %s failed for refund request %s", payment.provider, refund_request.pk)
        return _refund_request_unanswered(refund_request_id=refund_request.pk, error=f"{type(exc).__name__}: {exc}")
    return _refund_answer_record(refund_request_id=refund_request.pk, result=result, source_ref="refund answer")


def _refund_request_locked(refund_request_id: uuid.UUID) -> tuple[Payment, RefundRequest]:
    """Lock order everywhere: the payment, then its refund request."""
    payment_id = RefundRequest.objects.filter(pk=refund_request_id).values_list("payment_id", flat=True).get()
    payment = payment_lock(payment_id=payment_id)
    return payment, RefundRequest.objects.select_for_update(of=("self",)).get(pk=refund_request_id)


def _refund_answer_record(*, refund_request_id: uuid.UUID, result: RefundResult, source_ref: str) -> RefundRequest:
    """What the provider answered about the refund (when asked for it, or asked about it later)
    becomes a fact keyed by its refund id; the request then follows the ledger."""
    now = timezone.now()
    with transaction.atomic():
        payment, refund_request = _refund_request_locked(refund_request_id)
        adapter = get_provider(payment.provider)
        first_answer = not refund_request.provider_refund_id
        if first_answer:
            refund_request.provider_refund_id = result.refund_id[:255]
            refund_request.ledger_key = refund_request.ledger_key or refund_request.provider_refund_id
            refund_request.submitted_at = now
            refund_request.attempts += 1
        refund_request.error = ""
        if refund_request.unanswered:
            refund_request.status = RefundRequest.Status.SUBMITTED
        refund_request.next_check_at = _refund_next_check(refund_request, adapter=adapter, now=now)
        refund_request.save()
        status = result.status
        if status == RefundStatus.SUCCEEDED and not adapter.refund_events_name_the_refund:
            # This provider's webhook reports the same refund under another key: it is the one
            # that counts the money (refund_requests_sync), so ours stays on its way until then.
            status = RefundStatus.PENDING
        details = {
            "refund_request": str(refund_request.pk),
            "provider_refund_id": refund_request.provider_refund_id,
            "provider_status": result.detail[:200],
        }
        if result.amount_minor != refund_request.amount_minor:
            details["requested_minor"] = refund_request.amount_minor
        _refund_fact_record(
            payment=payment,
            key=refund_request.provider_refund_id,
            status=status,
            amount_minor=result.amount_minor,
            source=FactSource.PROVIDER_API,
            source_ref=f"{source_ref} {refund_request.pk}",
            actor_type=AuditLog.ActorType.PROVIDER,
            actor=payment.provider,
            details=details,
        )
        if first_answer:
            audit_record(
                action="refund.submitted",
                actor_type=AuditLog.ActorType.PROVIDER,
                actor=payment.provider,
                school_id=payment.school_id,
                target=refund_request,
                details={"provider_refund_id": refund_request.provider_refund_id, "provider_status": result.detail[:200]},
            )
        refund_request.refresh_from_db()
    return refund_request


def _refund_request_unanswered(*, refund_request_id: uuid.UUID, error: str) -> RefundRequest:
    """The provider's answer never arrived: the refund may have been made. Where the provider's
    idempotency key makes it safe, it is sent again later with the same key; elsewhere staff
    check the provider's dashboard and resolve it (``refund_request_resolve``)."""
    now = timezone.now()
    with transaction.atomic():
        payment, refund_request = _refund_request_locked(refund_request_id)
        refund_request.attempts += 1
        refund_request.error = error[:2000]
        if refund_request.status == RefundRequest.Status.REQUESTED:
            refund_request.status = RefundRequest.Status.IN_DOUBT
        refund_request.next_check_at = _refund_next_check(refund_request, adapter=get_provider(payment.provider), now=now)
        refund_request.save()
        audit_record(
            action="refund.in_doubt",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor=payment.provider,
            school_id=payment.school_id,
            target=refund_request,
            details={"error": error[:500], "resent_by_itself": refund_request.next_check_at is not None},
        )
    return refund_request


def _refund_request_refused(*, refund_request_id: uuid.UUID, error: str) -> RefundRequest:
    """The provider refused: nothing was refunded, the amount is free again."""
    with transaction.atomic():
        payment, refund_request = _refund_request_locked(refund_request_id)
        refund_request.attempts += 1
        refund_request.error = error[:2000]
        if refund_request.unanswered:
            refund_request.status = RefundRequest.Status.FAILED
            refund_request.finished_at = timezone.now()
            refund_request.next_check_at = None
        refund_request.save()
        audit_record(
            action="refund.refused",
            actor_type=AuditLog.ActorType.PROVIDER,
            actor=payment.provider,
            school_id=payment.school_id,
            target=refund_request,
            details={"error": error[:500]},
        )
    return refund_request


def _refund_next_check(refund_request: RefundRequest, *, adapter, now: datetime) -> datetime | None:
    """When to ask the provider about the refund again, or send it again: a refund on its way is
    asked about (where the provider's API can say) on ``REFUND_RECHECK_SCHEDULE_SECONDS`` from
    when it was submitted; one whose answer was lost is sent again with the same key only where
    that key is honoured, and only while the provider remembers it."""
    schedule = settings.REFUND_RECHECK_SCHEDULE_SECONDS
    if refund_request.status == RefundRequest.Status.SUBMITTED:
        if not selectors.provider_reports_refunds(adapter) or refund_request.checks >= len(schedule):
            return None
        return (refund_request.submitted_at or now) + timedelta(seconds=schedule[refund_request.checks])
    if refund_request.status == RefundRequest.Status.IN_DOUBT and adapter.refund_idempotent:
        retry_at = now + timedelta(seconds=schedule[min(refund_request.checks, len(schedule) - 1)])
        if retry_at < refund_request.created_at + timedelta(seconds=adapter.refund_idempotency_window_seconds):
            return retry_at
    return None


def _refund_fact_record(
    *,
    payment: Payment,
    key: str,
    status: str,
    amount_minor: int,
    source: str,
    source_ref: str,
    actor_type: str,
    actor: str,
    details: dict[str, Any],
) -> PaymentChange:
    """One refund fact of a locked payment, then the payment settled from all its facts (audit
    ``payment.refund``), inside the caller's transaction."""
    fact = TransactionFact(
        kind=FactKind.REFUND,
        key=key[:255],
        status=status,
        amount_minor=amount_minor,
        currency=payment.currency,
        occurred_at=timezone.now(),
        source=source,
        source_ref=source_ref[:255],
    )
    _facts_add(payment, [fact])
    return payment_settle(
        payment=payment,
        actor_type=actor_type,
        actor=actor,
        audit_action="payment.refund",
        details={**details, "refund_key": key, "refund_status": status},
    )


def refund_requests_sync(*, payment: Payment) -> None:
    """Keep the payment's refund requests in step with its ledger. ``payment_settle`` calls it
    first, with the payment row locked, so what it closes is folded in the same settlement.

    A request follows the refund fact of its key: succeeded or failed once a fact of that key
    says so (whoever said it: the provider's answer, its API asked later, its webhook), and
    submitted while the refund is on its way.

    Paystack's and Chapa's refund webhooks carry no refund id, so their reports land under keys
    of their own, beside the id their refund API answered. Such a report is matched to a request
    by amount, among the payment's refund reports no other request has claimed, and only to a
    request made before the report arrived: the request then follows it, and every other key of
    the same refund is closed with a failed fact (``SAME_REFUND_AS``), so the money counts once,
    under one key. When two refunds of the same amount are on their way, which request gets which
    report cannot be known from the payload; the ledger's total is right either way.
    """
    requests = list(RefundRequest.objects.filter(payment=payment).order_by("created_at", "id"))
    if not requests:
        return
    reports = _refund_reports(payment)
    live = [request for request in requests if request.status != RefundRequest.Status.FAILED]
    if refund_adapter(payment=payment) is not None and not get_provider(payment.provider).refund_events_name_the_refund:
        _refund_reports_match(requests=requests, live=live, reports=reports)
    closing: list[TransactionFact] = []
    # A failed request too: the provider's answer may arrive after its webhook said it failed,
    # and that answer's pending key must be closed like any other.
    for request in requests:
        _refund_request_follow(request, reports=reports, payment=payment, closing=closing)
    _facts_add(payment, closing)


@dataclass
class _RefundReport:
    """What the facts of one refund key say."""

    status: str | None  # the highest-ranked status reported, closing facts aside
    amount_minor: int
    first_learnt: datetime
    from_webhooks_only: bool
    closed: bool  # a closing fact made another key stand for it


def _refund_reports(payment: Payment) -> dict[str, _RefundReport]:
    reports: dict[str, _RefundReport] = {}
    for key, status, amount, source, source_ref, created_at in (
        TransactionFact.objects.filter(payment=payment, kind=FactKind.REFUND, amount_minor__isnull=False)
        .order_by("created_at", "id")
        .values_list("key", "status", "amount_minor", "source", "source_ref", "created_at")
    ):
        report = reports.setdefault(key, _RefundReport(None, amount, created_at, True, False))
        if source == FactSource.SYSTEM and source_ref.startswith(SAME_REFUND_AS):
            report.closed = True
            continue
        if report.status is None or REFUND_RANK[status] > REFUND_RANK[report.status]:
            report.status = status
        report.amount_minor = max(report.amount_minor, amount)
        report.from_webhooks_only &= source == FactSource.PROVIDER_EVENT
    return reports


def _refund_request_keys(request: RefundRequest) -> list[str]:
    own = request.provider_refund_id or (request.ledger_key if request.method == RefundRequest.Method.MANUAL else "")
    return ([own] if own else []) + list(request.matched_keys)


def _refund_reports_match(
    *, requests: list[RefundRequest], live: list[RefundRequest], reports: dict[str, _RefundReport]
) -> None:
    """Give each webhook report no request has claimed to the oldest request it can be: the same
    amount, made before the report arrived, and without a final report of its own yet."""
    final = (RefundStatus.SUCCEEDED, RefundStatus.FAILED)
    claimed = {key for request in requests for key in (*_refund_request_keys(request), request.ledger_key) if key}
    unclaimed = sorted(
        (
            (report.first_learnt, key)
            for key, report in reports.items()
            if key not in claimed and report.from_webhooks_only and not report.closed and report.status
        ),
    )
    for _, key in unclaimed:
        report = reports[key]
        for request in live:
            if request.amount_minor != report.amount_minor or report.first_learnt < request.created_at:
                continue
            if any(reports[k].status in final for k in request.matched_keys if k in reports):
                continue
            request.matched_keys = [*request.matched_keys, key]
            break


def _refund_request_follow(
    request: RefundRequest, *, reports: dict[str, _RefundReport], payment: Payment, closing: list[TransactionFact]
) -> None:
    """Set the request's status from its keys' reports, and close every key but the one that
    counts (see ``refund_requests_sync``)."""
    keys = [key for key in _refund_request_keys(request) if key in reports and reports[key].status]
    before = (request.status, request.ledger_key, list(request.matched_keys))
    if keys:
        statuses = {key: reports[key].status for key in keys}
        own = keys[0] if keys[0] not in request.matched_keys else None
        if RefundStatus.FAILED in statuses.values():
            outcome = RefundStatus.FAILED
            counting = next(key for key in keys if statuses[key] == RefundStatus.FAILED)
        elif RefundStatus.SUCCEEDED in statuses.values():
            outcome = RefundStatus.SUCCEEDED
            counting = own if own and statuses[own] == RefundStatus.SUCCEEDED else next(
                key for key in keys if statuses[key] == RefundStatus.SUCCEEDED
            )
        else:
            outcome, counting = RefundStatus.PENDING, keys[0]
        now = timezone.now()
        for key in keys:
            report = reports[key]
            if key == counting or report.closed or report.status == RefundStatus.FAILED:
                continue
            closing.append(
                TransactionFact(
                    kind=FactKind.REFUND,
                    key=key,
                    status=RefundStatus.FAILED,
                    amount_minor=report.amount_minor,
                    currency=payment.currency,
                    occurred_at=now,
                    source=FactSource.SYSTEM,
                    source_ref=f"{SAME_REFUND_AS}{counting}"[:255],
                )
            )
            report.closed = True
        request.ledger_key = counting
        request.status = {
            RefundStatus.FAILED: RefundRequest.Status.FAILED,
            RefundStatus.SUCCEEDED: RefundRequest.Status.SUCCEEDED,
            RefundStatus.PENDING: RefundRequest.Status.SUBMITTED,
        }[outcome]
        if request.status in (RefundRequest.Status.SUCCEEDED, RefundRequest.Status.FAILED):
            request.finished_at = request.finished_at or now
            request.next_check_at = None
    if (request.status, request.ledger_key, list(request.matched_keys)) == before:
        return
    request.save(update_fields=["status", "ledger_key", "matched_keys", "finished_at", "next_check_at", "updated_at"])
    if request.status != before[0]:
        audit_record(
            action=f"refund.{request.status}",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor="ledger",
            school_id=request.school_id,
            target=request,
            details={
                "from": before[0],
                "ledger_key": request.ledger_key,
                "provider_refund_id": request.provider_refund_id,
                "matched_keys": request.matched_keys,
            },
        )


def refund_request_resolve(
    *, refund_request_id: uuid.UUID, decision: Literal["not_made", "send_again"], note: str, actor
) -> RefundRequest:
    """Staff resolve a refund whose provider answer was lost, after checking the provider's
    dashboard: it was not made there (the request fails and its amount is free again), or send it
    again with the same idempotency key. Audited as ``refund.resolved`` with the note."""
    note = (note or "").strip()
    if decision not in ("not_made", "send_again"):
        raise RefundInvalid({"decision": "Choose what the provider's dashboard shows."})
    if not note:
        raise RefundInvalid({"note": "Write what you checked."})
    with transaction.atomic():
        payment, refund_request = _refund_request_locked(refund_request_id)
        if not selectors.user_can_access_school(user=actor, school_id=refund_request.school_id):
            raise RefundRefused("not_your_school", "You are not staff of this payment's school.")
        if refund_request.status != RefundRequest.Status.IN_DOUBT:
            raise RefundRefused(
                "refund_not_in_doubt", f"This refund is {refund_request.get_status_display().lower()}: nothing to resolve."
            )
        refund_request.next_check_at = None
        if decision == "not_made":
            refund_request.status = RefundRequest.Status.FAILED
            refund_request.finished_at = timezone.now()
        else:
            refund_request.status = RefundRequest.Status.REQUESTED
        refund_request.save()
        audit_record(
            action="refund.resolved",
            actor_type=AuditLog.ActorType.STAFF,
            actor=actor.get_username(),
            school_id=refund_request.school_id,
            target=refund_request,
            details={"decision": decision, "note": note[:1000]},
        )
    if decision == "send_again":
        return refund_request_send(refund_request_id=refund_request.pk)
    return refund_request


def refund_requests_recheck_due(*, now: datetime | None = None, limit: int = 200) -> list[uuid.UUID]:
    """Celery beat: enqueue one ``refund_request_recheck`` per refund whose check is due,
    claiming each by moving its ``next_check_at`` ahead (rows another run holds are skipped)."""
    from payments.tasks import refund_request_recheck_task

    now = now or timezone.now()
    with transaction.atomic():
        due = RefundRequest.objects.filter(next_check_at__lte=now).order_by("next_check_at")
        refund_ids = list(due.select_for_update(skip_locked=True, of=("self",)).values_list("pk", flat=True)[:limit])
        RefundRequest.objects.filter(pk__in=refund_ids).update(
            next_check_at=now + timedelta(seconds=settings.PAYMENT_RECHECK_CLAIM_SECONDS)
        )
        for refund_id in refund_ids:
            enqueue_on_commit(refund_request_recheck_task, str(refund_id))
    return refund_ids


def refund_request_recheck(*, refund_request_id: uuid.UUID) -> str:
    """Ask the provider where a submitted refund stands (its answer becomes a fact, like any
    other), or send again a refund whose answer was lost where the provider's idempotency key
    makes that safe. Asked with no lock held."""
    refund_request = RefundRequest.objects.select_related("payment__account").get(pk=refund_request_id)
    payment = refund_request.payment
    adapter = refund_adapter(payment=payment)
    if adapter is None:
        RefundRequest.objects.filter(pk=refund_request.pk).update(next_check_at=None)
        return "not a provider refund"
    if refund_request.status == RefundRequest.Status.IN_DOUBT:
        with transaction.atomic():
            _, refund_request = _refund_request_locked(refund_request_id)
            if refund_request.status != RefundRequest.Status.IN_DOUBT or _refund_next_check(
                refund_request, adapter=adapter, now=timezone.now()
            ) is None:
                RefundRequest.objects.filter(pk=refund_request.pk).update(next_check_at=None)
                return "left to staff"
            refund_request.status = RefundRequest.Status.REQUESTED
            refund_request.checks += 1
            refund_request.save(update_fields=["status", "checks", "updated_at"])
        return f"sent again: {refund_request_send(refund_request_id=refund_request.pk).status}"
    if refund_request.status != RefundRequest.Status.SUBMITTED or not refund_request.provider_refund_id:
        RefundRequest.objects.filter(pk=refund_request.pk).update(next_check_at=None)
        return "nothing to ask"
    RefundRequest.objects.filter(pk=refund_request.pk).update(checks=refund_request.checks + 1)
    try:
        result = adapter.refund_status(payment=payment, refund_id=refund_request.provider_refund_id)
    except ProviderError as exc:
        with transaction.atomic():
            _, refund_request = _refund_request_locked(refund_request_id)
            refund_request.error = exc.detail[:2000]
            refund_request.next_check_at = _refund_next_check(refund_request, adapter=adapter, now=timezone.now())
            refund_request.save(update_fields=["error", "next_check_at", "updated_at"])
        return f"no answer: {exc.detail}"
    refund_request = _refund_answer_record(refund_request_id=refund_request.pk, result=result, source_ref="refund check")
    return f"provider says {result.status}; refund {refund_request.status}"
