"""Many provider events settled in one transaction: what each event would read or write on its
own, read or written once for all of them.

The worker receives events in messages of up to a hundred; applied one by one, each costs a
dozen statements, most of them the same look-up or the same one-row insert again. A
``SettlementBatch`` is handed to ``payment_event_apply`` for every event of a message, inside the
one transaction that applies them all:

- ``prepare`` takes every transaction id's lock at once (sorted, as ``payments.locks`` requires),
  then reads, in one query each, the payments those ids name (locked), which of the ids have
  facts waiting for their payment, and the known students of the events' provider student ids;
- each event is then settled as on its own, but finds its payment, its waiting facts and its
  student in what was read, and leaves its new payment, facts, audit entries, outbox rows and
  books offer here;
- ``flush`` inserts them with one statement per table, in the order they were made, before the
  transaction commits (``webhooks.batches`` calls it), and a table's before any statement of the
  transaction that may read it (``before_statement``: a risk rule reading the school's recent
  payments, a later event's look-up), so nothing reads the database as if they were not there.

What was read stays right for the whole transaction: the ids are locked, so no one else can
create their payment or leave a fact waiting for it until commit. What this batch changes is
tracked: an event whose ids another event of the batch already touched looks its payment up
again (the row, its facts and its refunds may have changed since they were read), and the
pending rows are written first so the outbox keeps each payment's events in order. A payment
row with twenty indexes costs 1.8 ms inserted alone and 0.5 ms in an insert of a hundred.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db.models import Q

from payments import locks, selectors
from payments.models import AuditLog, OutboxEvent, Payment, ProviderAccount, ProviderStudentLink, TransactionFact
from payments.services.facts import event_ids
from providers.base import NormalizedEvent


class SettlementBatch:
    def __init__(self, *, learnt: Iterable[tuple[int, str, str]] = ()) -> None:
        # (school, provider, provider student id) the School Directory named just before the
        # batch (``provider_students_learn``): mapped here, from the directory.
        self._learnt = set(learnt)
        self._candidates: dict[int, list[Payment]] = {}  # account id -> payments read for the ids, locked
        self._looked_up: set[tuple[int, str, str]] = set()  # (account id, kind, value) read for waiting facts
        self._waiting: set[tuple[int, str, str]] = set()  # ... of those, with facts waiting for their payment
        self._touched: set[tuple[int, str, str]] = set()  # ids whose payment or facts this batch changed
        self._used: set[uuid.UUID] = set()  # payments read once and settled since: their row is stale
        # (school, provider, provider student id) -> its Student, or None when unknown
        self._students: dict[tuple[int, str, str], object] = {}
        # Rows to insert, parents first: new payments, their facts, audit entries, outbox rows.
        self._pending: dict[type, list] = {Payment: [], TransactionFact: [], AuditLog: [], OutboxEvent: []}
        self._flushing = False
        self.offered: list[uuid.UUID] = []  # payments to offer to the books after commit

    # --- Reads, once for the batch -----------------------------------------------------------

    def prepare(self, items: Iterable[tuple[ProviderAccount, NormalizedEvent]]) -> None:
        by_account: dict[int, tuple[ProviderAccount, set[tuple[str, str]]]] = {}
        students: set[tuple[int, str, str]] = set()
        for account, event in items:
            if not event.concerns_payment:
                continue
            ids = {(kind, value) for kind, value in event_ids(event) if value}
            by_account.setdefault(account.pk, (account, set()))[1].update(ids)
            if event.provider_student_id:
                students.add((account.school_id, account.provider, event.provider_student_id))
        locks.transaction_ids_lock_many(
            (account_id, kind, value) for account_id, (_, ids) in by_account.items() for kind, value in ids
        )
        for account_id, (account, ids) in by_account.items():
            self._candidates[account_id] = locks.payments_of_transactions(account=account, ids=ids)
            self._waiting_read(account_id, ids)
        self._students_read(students)

    def _waiting_read(self, account_id: int, ids: set[tuple[str, str]]) -> None:
        txn_ids = {value for kind, value in ids if kind == "txn"}
        references = {value for kind, value in ids if kind == "ref"}
        self._looked_up.update((account_id, "txn", value) for value in txn_ids)
        self._looked_up.update((account_id, "ref", value) for value in references)
        waiting = TransactionFact.objects.filter(
            Q(txn_id__in=txn_ids) | Q(reference__in=references), account_id=account_id, payment__isnull=True
        ).values_list("txn_id", "reference")
        for txn_id, reference in waiting:
            self._waiting.update({(account_id, "txn", txn_id), (account_id, "ref", reference)})

    def _students_read(self, keys: set[tuple[int, str, str]]) -> None:
        if not keys:
            return
        self._students = dict.fromkeys(keys)
        # One index scan by the ids (a hundred ORed conditions cost more to build than to run);
        # the rare link of another school or provider with the same id is skipped below.
        links = ProviderStudentLink.objects.select_related("student").filter(
            school_id__in={key[0] for key in keys},
            provider__in={key[1] for key in keys},
            provider_student_id__in={key[2] for key in keys},
        )
        for link in links:
            key = (link.school_id, link.provider, link.provider_student_id)
            if key in self._students:
                self._students[key] = link.student

    # --- Per event -------------------------------------------------------------------------------

    def payment_of_transaction(self, *, account: ProviderAccount, ids: list[tuple[str, str]]) -> Payment | None:
        """What ``locks.payment_of_transaction`` would return, from what was read when it is
        still right; else its query (with the pending rows written first)."""
        keys = {(account.pk, kind, value) for kind, value in ids if value}
        found = [payment for payment in self._candidates.get(account.pk, ()) if locks.payment_matches(payment, ids)]
        if keys & self._touched or any(payment.pk in self._used for payment in found):
            self.flush()
            return locks.payment_of_transaction(account=account, ids=ids)
        return locks.payment_pick(found, ids)

    def settled(self, *, account: ProviderAccount, ids: list[tuple[str, str]], payment: Payment | None) -> None:
        """An event was applied: later events sharing its ids, or its payment's, look again."""
        self._touched.update((account.pk, kind, value) for kind, value in ids if value)
        if payment is not None:
            self._used.add(payment.pk)
            self._touched.update((account.pk, kind, value) for kind, value in _payment_ids(payment) if value)

    def facts_waiting_none(self, payment: Payment) -> bool:
        """Whether it is known, without a query, that no fact waits for this payment."""
        ids = _payment_ids(payment)
        keys = {(payment.account_id, kind, value) for kind, value in ids if value and kind in ("txn", "ref")}
        return keys <= self._looked_up and not keys & (self._waiting | self._touched)

    def facts_left_waiting(self, *, account: ProviderAccount, ids: list[tuple[str, str]]) -> None:
        self._touched.update((account.pk, kind, value) for kind, value in ids if value)

    def known_student(self, *, school_id: int, provider: str, provider_student_id: str):
        """The known student (``payments.selectors.known_student``), as read for the batch."""
        key = (school_id, provider, provider_student_id)
        if key in self._students:
            return self._students[key]
        return selectors.known_student(school_id=school_id, provider=provider, provider_student_id=provider_student_id)

    def mapping_source(self, payment: Payment) -> str:
        """Where a payment's known student came from: the directory just now, or a mapping kept
        before."""
        learnt = (payment.school_id, payment.provider, payment.provider_student_id) in self._learnt
        return "directory" if learnt else "cache"

    # --- Writes, once for the batch -----------------------------------------------------------

    def rows_add(self, rows: list) -> None:
        """Rows (new payments, facts, audit entries, outbox rows) to insert with the batch's."""
        for row in rows:
            self._pending[type(row)].append(row)

    def flush(self, models: Iterable[type] | None = None) -> None:
        """Insert the pending rows (of ``models``, else all), one statement per table, parents
        first and each table's rows in the order they were made."""
        if self._flushing:
            return
        self._flushing = True
        try:
            for model, rows in self._pending.items():
                if rows and (models is None or model in models):
                    model.objects.bulk_create(rows)
                    rows.clear()
        finally:
            self._flushing = False

    def before_statement(self, execute, sql, params, many, context):
        """A database execute wrapper for the batch's transaction: a statement that may read a
        table with pending rows (any but an INSERT or a savepoint's) inserts them first, so every
        read in the transaction sees what the batch wrote, as it would one event at a time."""
        if not self._flushing and not sql.lstrip().startswith(_NOT_READING):
            read = [model for model, rows in self._pending.items() if rows and model._meta.db_table in sql]
            if read:
                self.flush(read)
        return execute(sql, params, many, context)


_NOT_READING = ("INSERT", "SAVEPOINT", "RELEASE SAVEPOINT")


def _payment_ids(payment: Payment) -> list[tuple[str, str]]:
    return [
        ("txn", payment.external_txn_id or ""), ("txn", payment.provider_charge_id or ""),
        ("checkout", payment.provider_checkout_id or ""), ("ref", payment.reference or ""),
        ("ref", payment.provider_reference or ""),
    ]  # fmt: skip
