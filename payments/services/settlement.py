"""Provider events and the provider's API in, the payment folded out of its facts
(``payments.ledger``), and everything that follows a change of what the school holds."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from config.celery import enqueue_on_commit
from core.status import PaymentStatus
from payments import locks, outbox, selectors
from payments.audit import audit_entry, audit_record
from payments.ledger import FactKind
from payments.models import (
    AuditLog,
    MappingStatus,
    OutboxEvent,
    Payment,
    ProviderAccount,
    ReviewFlag,
    TransactionFact,
)
from payments.services.batch import SettlementBatch
from payments.services.facts import event_ids, fact_summary, facts_add, facts_adopt, facts_from_event, facts_from_status
from payments.services.finalize import payment_finalize
from payments.services.refund_sync import refund_requests_sync
from payments.services.risk import payment_risk_update
from payments.state import IN_FLIGHT_STATES, SETTLED_STATES
from providers.base import NormalizedEvent, NormalizedStatus

logger = logging.getLogger(__name__)

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
    account: ProviderAccount,
    event: NormalizedEvent,
    webhook_event_id: int | None = None,
    received_at: datetime | None = None,
    audit_action: str = "payment.webhook",
    batch: SettlementBatch | None = None,
) -> PaymentChange:
    """Record what a verified provider event says about its transaction and settle the payment
    from everything known, inside the caller's transaction.

    The event's facts are kept whatever they say. A charge creates its payment when none exists
    yet; a refund or dispute that arrives first waits, unattached, and is taken into account
    when its payment appears. The payment is then folded from all its facts
    (``payment_settle``), so any order of the same events gives the same payment. One audit
    entry says what changed, or why nothing did.

    ``batch``: the event is one of many applied in this transaction (``SettlementBatch``), which
    holds what they share: its locks and look-ups taken for all, its rows written for all.
    """
    if not event.concerns_payment:
        return PaymentChange(None, False, False, None, None, f"{event.event_type} concerns no payment")
    occurred_at = event.occurred_at or received_at or timezone.now()
    facts = facts_from_event(event, occurred_at=occurred_at, webhook_event_id=webhook_event_id)
    ids = event_ids(event)
    if batch is None:
        locks.transaction_ids_lock(account_id=account.pk, ids=ids)
        payment = locks.payment_of_transaction(account=account, ids=ids)
    else:
        payment = batch.payment_of_transaction(account=account, ids=ids)
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
            if batch is not None:
                batch.facts_left_waiting(account=account, ids=ids)
            what = ", ".join(fact_summary(fact) for fact in facts)
            return PaymentChange(None, False, False, None, None, f"{what}: waits for its payment")
        # Inserted by ``payment_settle`` with its settled state and its student, in one INSERT
        # rather than an INSERT and an UPDATE of a row with twenty indexes. Its facts may be
        # written first: their foreign key to it is checked at commit.
        payment = _payment_from_event(account=account, event=event)
        known_student = _known_student_take(payment, batch)
    else:
        _payment_ids_learn(payment, event)
        known_student = _known_student_take(payment, batch)
        if known_student is not None:
            payment.save(update_fields=["student", "mapping_status", "mapping_error", "updated_at"])
    # A new payment with no facts waiting for it holds only this event's: kept in memory, they
    # are folded without being read back.
    none_waited = (batch is not None and batch.facts_waiting_none(payment)) or facts_adopt(payment) == 0
    only_these = none_waited and created
    stored = facts_add(payment, facts, none_before=only_these, batch=batch)
    change = payment_settle(
        payment=payment,
        created=created,
        facts=stored if only_these else None,
        actor_type=AuditLog.ActorType.PROVIDER,
        actor=account.provider,
        audit_action=audit_action,
        details={"event_id": event.event_id, "event_type": event.event_type},
        reported=event.status,
        mapped_from=(batch.mapping_source(payment) if batch else "cache") if known_student is not None else None,
        batch=batch,
    )
    if batch is not None:
        batch.settled(account=account, ids=ids, payment=payment)
    return change


def _known_student_take(payment: Payment, batch: SettlementBatch | None = None):
    """Map a payment without a student from the known mappings (``ProviderStudentLink``: the
    directory's earlier answers and staff's choices), in the caller's transaction. Most payments
    of a term come from students paid for before: they are mapped here, with their settlement,
    and never wait for the School Directory. Returns the student, or None."""
    if payment.student_id is not None or not payment.provider_student_id:
        return None
    student = (batch or selectors).known_student(
        school_id=payment.school_id, provider=payment.provider, provider_student_id=payment.provider_student_id
    )
    if student is not None:
        payment.student, payment.mapping_status, payment.mapping_error = student, MappingStatus.MAPPED, ""
    return student


def payment_mapped_record(*, payment: Payment, student, source: str, actor_type: str, actor: str, **details) -> None:
    """What a payment being mapped to its student leaves behind, in the caller's transaction:
    its ``payment.mapped`` event and its audit entry."""
    outbox.payment_mapped_row(payment=payment, student_number=student.student_number, source=source).save(force_insert=True)
    _mapped_audit_entry(payment, student, source, actor_type, actor, **details).save()


def _mapped_audit_entry(payment: Payment, student, source: str, actor_type: str, actor: str, **details) -> AuditLog:
    return audit_entry(
        action="payment.mapped",
        actor_type=actor_type,
        actor=actor,
        school_id=payment.school_id,
        target=payment,
        details={"student_number": student.student_number, "source": source, **details},
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
        facts_adopt(payment)
        facts_add(payment, facts_from_status(status, payment=payment, source_ref=source))
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
    return locks.payment(payment_id)


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
    facts_add(payment, [fact])
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
    mapped_from: str | None = None,
    facts: list[TransactionFact] | None = None,
    batch: SettlementBatch | None = None,
) -> PaymentChange:
    """Fold the locked payment's facts (``payments.ledger``) and store the result: status,
    amounts, conflicts for staff, the janitor's next check. Then, in the same transaction: one
    audit entry, the payment request settled when the payment first succeeds
    (``payment_finalize``), and the books told after commit when what the school holds changed
    or the payment was just mapped to its student (``mapped_from``: the mapping's source, whose
    ``payment.mapped`` event and audit entry are written with the settlement's). ``facts``: all of
    the payment's facts, when the caller holds them (a payment created just now), else they are
    read. ``created``: the payment is new and not saved yet; it is inserted here, settled.
    ``batch``: the audit entries, outbox rows and books offer are left to it, to be written with
    those of the other events of its transaction.
    """
    if not created:  # a payment created just now has no refund requests yet
        refund_requests_sync(payment=payment)
    ledger = selectors.payment_ledger(payment=payment, facts=facts)
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
    was_held = payment.risk_held
    payment_risk_update(payment, put, facts=facts)

    if created and batch is not None:
        batch.rows_add([payment])
    elif created:
        payment.save(force_insert=True)
    elif changed:
        payment.save(update_fields=sorted(changed | {"updated_at"}))

    after = _Money.of(payment, status=payment.status)
    applied = created or after != before
    note = _settle_note(before, after, ledger, reported)
    entries = [audit_entry(
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
    )]  # fmt: skip
    # The world outside hears of it if, and only if, this transaction commits.
    events = outbox.payment_event_rows(
        payment=payment, created=created, previous=None if created else before.as_event(),
        actor_type=actor_type, action=audit_action,
    ) if applied else []  # fmt: skip
    if mapped_from is not None:
        entries.append(_mapped_audit_entry(payment, payment.student, mapped_from, AuditLog.ActorType.SYSTEM, "directory"))
        events.append(outbox.payment_mapped_row(payment=payment, student_number=payment.student.student_number, source=mapped_from))
    if batch is None:
        AuditLog.objects.bulk_create(entries)
        OutboxEvent.objects.bulk_create(events)
    else:
        batch.rows_add(entries + events)
    if first_settled and payment.payment_request_id:
        # A payment started from a pay link: settle its request in this same transaction.
        if batch is not None:
            batch.flush()  # its events follow the payment's in the outbox
        outcome = payment_finalize(payment=payment, actor_type=actor_type, actor=actor)
        note = f"{note}; {outcome.summary}"
    if ledger.status in SETTLED_STATES and (
        first_settled or mapped_from or after.held != before.held or was_held != payment.risk_held
    ):
        if batch is None:
            payment_offer_to_books_on_commit(payment_ids=[payment.pk])
        else:
            batch.offered.append(payment.pk)
    if first_settled and _payer_contact_known(payment):
        # The parent's confirmation and receipt (payments.services.notices), once per payment.
        enqueue_on_commit("payments.tasks.payment_receipt_issue", str(payment.pk))
    return PaymentChange(payment, created, applied, from_status, payment.status, note)


def _payer_contact_known(payment: Payment) -> bool:
    """Whether a confirmation has anyone to go to: the request's parent contact or the payer's."""
    payer = payment.payer if isinstance(payment.payer, dict) else {}
    if payer.get("email") or payer.get("phone"):
        return True
    if payment.payment_request_id is None:
        return False
    payment_request = payment.payment_request
    return bool(payment_request.parent_email or payment_request.parent_phone)


def payment_offer_to_books_on_commit(*, payment_ids: list[uuid.UUID]) -> None:
    """Offer payments to the books once the current change commits: what the school holds may
    just have changed (settled, refunded, charged back, mapped to a student). The books apps are
    the hooks of ``settings.PAYMENT_BOOKS_HOOKS`` (QuickBooks: ``qbo_sync_offered``), called with
    the payments' ids, so payments never imports them; each is idempotent and cheap, and decides.
    An error there must not undo the committed change: it is logged, and the books' backlog scan
    finds the payment later."""
    if not payment_ids:
        return
    for hook in map(import_string, settings.PAYMENT_BOOKS_HOOKS):
        transaction.on_commit(lambda hook=hook: hook(payment_ids=list(payment_ids)), robust=True)


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

    def as_event(self) -> dict[str, Any]:
        """The ``previous`` of a payment event (docs/events.md)."""
        return {
            "status": self.status, "amount_minor": self.amount_minor, "currency": self.currency,
            "refunded_minor": self.refunded_minor, "charged_back_minor": self.charged_back_minor,
            "disputed_minor": self.disputed_minor,
        }  # fmt: skip

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
    if reported and reported != after.status and not (reported == PaymentStatus.SUCCEEDED and after.status in SETTLED_STATES):
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
            put("next_check_at", recheck_time(payment.checkout_created_at or payment.created_at or now, 0))
    elif payment.next_check_at is not None and ledger.status not in RECHECKABLE_STATES:
        put("next_check_at", None)


def _payment_from_event(*, account: ProviderAccount, event: NormalizedEvent) -> Payment:
    """A new payment for a transaction we first hear of from its provider (saved by
    ``payment_settle``)."""
    return Payment(
        id=uuid.uuid4(),
        school=account.school,  # loaded with the account: read by the risk rules
        account=account,
        provider=account.provider,
        external_txn_id=event.external_txn_id or None,
        provider_checkout_id=event.checkout_id or None,
        provider_reference=event.reference,
        provider_charge_id=event.charge_id if event.charge_id != event.external_txn_id else "",
        amount_minor=event.amount_minor,
        currency=event.currency,
        status=PaymentStatus.PENDING,
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



# --- The janitor: payments whose webhook never came ------------------------------------------------

# Payments the janitor still asks about. A cancelled one was given up by the payer or superseded,
# but the provider may still take money for it.
RECHECKABLE_STATES = (PaymentStatus.PENDING, PaymentStatus.PROCESSING, PaymentStatus.CANCELLED)


def recheck_time(start: datetime, checks_done: int) -> datetime | None:
    """When to ask the provider for the (checks_done + 1)-th time, counted from ``start``; None
    when the schedule is used up."""
    schedule = settings.PAYMENT_RECHECK_SCHEDULE_SECONDS
    if checks_done >= len(schedule):
        return None
    return start + timedelta(seconds=schedule[checks_done])


# --- Risk: staff let a flagged payment through ----------------------------------------------


class RiskClearRefused(Exception):
    pass


def payment_risk_clear(*, payment_id: uuid.UUID, actor: str, note: str = "") -> Payment:
    """A staff member looked at a flagged payment and lets it through: it stays flagged (the
    score and reasons remain for the record) but is no longer held from the books, which are
    offered it after commit. Audited as ``payment.risk_cleared``."""
    with transaction.atomic():
        payment = locks.payment(payment_id)
        if not payment.risk_flagged:
            raise RiskClearRefused("This payment is not flagged as high risk")
        if payment.risk_cleared_at is not None:
            raise RiskClearRefused(f"Already cleared by {payment.risk_cleared_by}")
        was_held = payment.risk_held
        payment.risk_cleared_at, payment.risk_cleared_by, payment.risk_held = timezone.now(), actor[:150], False
        payment.save(update_fields=["risk_cleared_at", "risk_cleared_by", "risk_held", "updated_at"])
        audit_record(
            action="payment.risk_cleared", actor_type=AuditLog.ActorType.STAFF, actor=actor, school_id=payment.school_id,
            target=payment, details={"score": payment.risk_score, "was_held": was_held, "note": note[:500]},
        )  # fmt: skip
        if was_held:
            payment_offer_to_books_on_commit(payment_ids=[payment.pk])
    return payment
