"""A worker's message of webhook events applied in one transaction.

The request path publishes events in messages of up to a hundred ids (``EVENT_PUBLISHER``).
Applied one at a time, each event is its own transaction of about thirteen statements. Here a
message's events are claimed with one ``UPDATE … RETURNING``, applied with what they share read
and written once (``payments.services.batch.SettlementBatch``: the transaction ids' locks, the
payments those ids name, waiting facts, known students, the audit entries and outbox rows), and
marked applied, or processed, with one more ``UPDATE``: one commit for all.

The result is the same as one at a time, event by event: each is applied exactly once (the
claim holds its row until commit), in the order the message gives. When anything goes wrong
the whole transaction is rolled back and the message is processed one event at a time
(``services.webhook_event_run``), where a failure is retried or recorded for that event alone.
Students new to us are asked of the School Directory before the transaction opens (no lock is
held across a network call), so their payments are mapped with their settlement. What is left
after commit comes one event at a time, as for a single event: the provider's confirmation of a
body not bound to a secret, and the mapping of a student the directory could not be asked about.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.db import connection, transaction

from ops.context import request_id_bound
from payments.models import WebhookEvent
from payments.services import (
    SettlementBatch,
    payment_event_apply,
    payment_offer_to_books_on_commit,
    provider_students_learn,
)
from providers.registry import get_provider
from webhooks.selectors import account_of_event
from webhooks.services import (
    EventApplied,
    event_applied,
    webhook_event_failure_record,
    webhook_event_follow_up,
    webhook_event_run,
    webhook_events_claim,
)

logger = logging.getLogger(__name__)


def webhook_events_process(*, events: list[tuple[int, str | None]]) -> dict[int, str | None]:
    """Process a message's events: ``(event id, request id)`` pairs, each processed under the id
    of the request that stored it. Returns each event's result, None for one there was nothing
    to claim (done, or another worker holds it)."""
    request_ids = dict(events)
    if len(request_ids) < 2 or connection.vendor != "postgresql":
        # SQLite (development) has neither the advisory locks nor the array parameters.
        return _one_by_one(request_ids)
    try:
        learnt, parsed = _students_learn(list(request_ids))
        applied = _claim_and_apply(list(request_ids), request_ids, learnt=learnt, parsed=parsed)
    except Exception:  # noqa: BLE001 - rolled back whole: each event gets its own go, and its own failure
        logger.warning(
            "applying %d webhook events together failed; applying them one by one", len(request_ids), exc_info=True
        )
        return _one_by_one(request_ids)
    results: dict[int, str | None] = dict.fromkeys(request_ids)
    for event, adapter, normalized, outcome in applied:
        with request_id_bound(request_ids[event.pk]):
            try:
                results[event.pk] = webhook_event_follow_up(event, adapter, normalized, outcome)
            except Exception as exc:  # noqa: BLE001 - retried, then failed, as for a single event
                results[event.pk] = webhook_event_failure_record(event_id=event.pk, exc=exc)
    return results


def _one_by_one(request_ids: dict[int, str | None]) -> dict[int, str | None]:
    results = {}
    for event_id, request_id in request_ids.items():
        with request_id_bound(request_id):
            results[event_id] = webhook_event_run(event_id=event_id)
    return results


def _students_learn(event_ids: list[int]) -> tuple[set[tuple[int, str, str]], dict]:
    """Before the transaction (no lock is held during a network call): the students of the
    events whose provider student id has no known mapping, asked of the School Directory
    (``provider_students_learn``), so their payments are mapped with their settlement. Only
    from bodies bound to a secret: an unconfirmed body's student waits for its confirmation.
    One look-up per new student, as one event at a time would make after the settlement.
    Returns the (school, provider, provider student id) learnt, and the bodies parsed on the way
    by event id (the transaction uses them rather than parse them again)."""
    if not settings.SCHOOL_API_BASE_URL:
        return set(), {}
    wanted: dict[int, set[str]] = {}
    parsed = {}
    unapplied = WebhookEvent.objects.filter(pk__in=event_ids, applied_at__isnull=True)
    for event_id, account_id, raw_body, headers in unapplied.values_list("pk", "account_id", "raw_body", "headers"):
        account = account_of_event(account_id)
        try:
            adapter = get_provider(account.provider)
            event = adapter.parse_body(body=raw_body.encode("utf-8"), headers=headers, account=account)
        except Exception:  # noqa: BLE001 - the batch, or the event on its own, records what is wrong with it
            continue
        parsed[event_id] = event
        # Only an event stating its charge's outcome makes (or moves) a payment to map; a refund
        # alone waits for its payment, and so does the student's look-up.
        trusted = event.concerns_payment and not event.requires_confirmation
        if trusted and event.status is not None and event.provider_student_id:
            wanted.setdefault(account_id, set()).add(event.provider_student_id)
    learnt = set()
    for account_id, provider_student_ids in wanted.items():
        account = account_of_event(account_id)
        for provider_student_id in provider_students_learn(account=account, provider_student_ids=provider_student_ids):
            learnt.add((account.school_id, account.provider, provider_student_id))
    return learnt, parsed


def _claim_and_apply(
    event_ids: list[int], request_ids: dict[int, str | None], *, learnt: set, parsed: dict
) -> list[tuple]:
    """Claim the events, apply each to its payment and mark it, in one transaction; returns
    ``(event, adapter, normalized event, EventApplied)`` for each event claimed, in message order."""
    batch = SettlementBatch(learnt=learnt)
    with transaction.atomic(), connection.execute_wrapper(batch.before_statement):
        position = {event_id: n for n, event_id in enumerate(event_ids)}
        claimed = sorted(webhook_events_claim(event_ids=event_ids), key=lambda event: position[event.pk])
        events = []
        for event in claimed:
            adapter = get_provider(event.account.provider)
            # Verified on receipt; parsed again from the stored body (once: before the
            # transaction, or here) so only the raw delivery needs storing.
            normalized = parsed.get(event.pk)
            if normalized is None:
                normalized = adapter.parse_body(
                    body=event.raw_body.encode("utf-8"), headers=event.headers, account=event.account
                )
            events.append((event, adapter, normalized))
        batch.prepare((event.account, normalized) for event, _, normalized in events if event.applied_at is None)
        applied, marks = [], []
        for event, adapter, normalized in events:
            if event.applied_at is not None:
                applied.append((event, adapter, normalized, EventApplied("applied before")))
                continue
            with request_id_bound(request_ids[event.pk]):
                change = payment_event_apply(
                    account=event.account, event=normalized, webhook_event_id=event.pk, received_at=event.received_at,
                    batch=batch,
                )  # fmt: skip
            event.payment_id = change.payment.pk if change.payment else None
            outcome = event_applied(normalized, change)
            applied.append((event, adapter, normalized, outcome))
            marks.append((event.pk, event.payment_id, outcome.finished, outcome.result[:200], outcome.processed_at))
        batch.flush()
        _marks_write(marks)
        payment_offer_to_books_on_commit(payment_ids=batch.offered)
    return applied


def _marks_write(marks: list[tuple]) -> None:
    """Each event applied (``applied_at``, its payment), and processed when nothing is left to do,
    in one statement. An event whose payment came later in the batch, and adopted its waiting
    fact, keeps the payment it was given."""
    if not marks:
        return
    # One JSON parameter rather than five arrays: psycopg adapts an array item by item.
    rows = json.dumps([
        {"id": event_id, "payment_id": payment_id and str(payment_id), "finished": finished, "result": result,
         "applied_at": applied_at.isoformat()}
        for event_id, payment_id, finished, result, applied_at in marks
    ])  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE payments_webhookevent AS e SET
                payment_id = COALESCE(m.payment_id, e.payment_id),
                applied_at = m.applied_at,
                status = CASE WHEN m.finished THEN %s ELSE e.status END,
                processed_at = CASE WHEN m.finished THEN m.applied_at ELSE e.processed_at END,
                result = CASE WHEN m.finished THEN m.result ELSE e.result END,
                last_error = CASE WHEN m.finished THEN '' ELSE e.last_error END,
                next_attempt_at = CASE WHEN m.finished THEN NULL ELSE e.next_attempt_at END
            FROM json_to_recordset(%s::json)
                AS m(id bigint, payment_id uuid, finished boolean, result text, applied_at timestamptz)
            WHERE e.id = m.id
            """,
            [WebhookEvent.Status.PROCESSED, rows],
        )
