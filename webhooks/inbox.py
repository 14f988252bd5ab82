"""Group commit of the request path's one write: the stored event and its outbox row.

On a busy morning a gunicorn process has several deliveries at the same step at once, and on
PostgreSQL most of an INSERT's cost is the statement and its commit, not the row: one statement
storing four events costs about what two single ones do. So a request thread that has its row
ready joins a queue. If no thread of the process is writing, it writes the queue (its own row
first) in one statement and one commit, on its own connection, then wakes the others with their
answers and hands the next queue to the first thread waiting in it. A lone delivery is written at
once: nothing waits for company.

Nothing changes in what a provider sees. Each thread answers only after the statement holding its
row has committed. The unique constraint on (account, event id) still decides duplicates (``ON
CONFLICT DO NOTHING``; an event sent twice in one batch is written once). If the batch statement
fails, for any reason, every delivery in it is stored again alone through the single-row path, so
one bad row fails only its own request.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, connection, transaction

from config.metrics import WEBHOOK_INBOX_FALLBACKS, WEBHOOK_INBOX_STATEMENT_ROWS
from payments.models import OutboxEvent, WebhookEvent

logger = logging.getLogger(__name__)

# The event columns a delivery's row names; the rest take their database defaults.
EVENT_COLUMNS = (
    "account",
    "external_event_id",
    "event_type",
    "raw_body",
    "headers",
    "remote_addr",
    "received_at",
    "status",
    "result",
    "processed_at",
)
# Its ``webhook.received`` outbox row: the row's keys, each with the outbox column it fills.
OUTBOX_COLUMNS = {
    "outbox_event_id": "event_id",
    "outbox_event_type": "event_type",
    "outbox_version": "version",
    "outbox_school": "school",
    "outbox_key": "key",
    "outbox_payload": "payload",
}

# Rows per statement: a process has a few threads, so a batch rarely holds more than a handful.
MAX_BATCH = 64


class BatchFailed(Exception):
    """The batch holding this delivery was not written: store it alone."""


@dataclass(eq=False)
class _Delivery:
    row: dict
    woken: threading.Event = field(default_factory=threading.Event)
    leads: bool = False
    done: bool = False
    event_pk: int | None = None  # None once done: the event was stored before
    failed: bool = False


class EventInbox:
    """One per process. ``store`` is called by request threads outside any transaction."""

    def __init__(self, *, max_batch: int = MAX_BATCH):
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Delivery] = []
        self._writing = False

    def store(self, row: dict) -> int | None:
        """Store one delivery's row (``webhooks.services``) with whatever else is queued; return the
        new event's id, or None when the (account, event id) was stored before. Raises
        ``BatchFailed`` when the statement holding it failed."""
        delivery = _Delivery(row)
        with self._lock:
            self._queue.append(delivery)
            delivery.leads = not self._writing
            self._writing = True
        while not delivery.done:
            if delivery.leads:
                self._write_next_batch()  # the queue starts with this delivery
            else:
                delivery.woken.wait()  # by a writer: with the answer, or to write next
                delivery.woken.clear()
        if delivery.failed:
            raise BatchFailed()
        return delivery.event_pk

    def _write_next_batch(self) -> None:
        with self._lock:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        answers: list[int | None] | None = None
        try:
            answers = events_insert([delivery.row for delivery in batch])
            WEBHOOK_INBOX_STATEMENT_ROWS.observe(len(batch))
        except Exception:
            WEBHOOK_INBOX_FALLBACKS.inc()
            logger.warning("%d webhook events not stored together: each is stored alone", len(batch), exc_info=True)
        finally:
            # Whatever happened (even an exit of this thread), no one is left waiting.
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is not None:
                    successor.leads = True
                else:
                    self._writing = False
            for index, delivery in enumerate(batch):
                if answers is None:
                    delivery.failed = True
                else:
                    delivery.event_pk = answers[index]
                delivery.done = True
                delivery.woken.set()
            if successor is not None:
                successor.woken.set()


def _key(row: dict) -> tuple:
    return (row["account_id"], row["external_event_id"])


@functools.cache
def _columns() -> tuple[list, dict]:
    event_meta, outbox_meta = WebhookEvent._meta, OutboxEvent._meta
    return (
        [event_meta.get_field(name) for name in EVENT_COLUMNS],
        {key: outbox_meta.get_field(name) for key, name in OUTBOX_COLUMNS.items()},
    )


def _names() -> dict[str, str]:
    """The quoted names both statements use."""
    quote = connection.ops.quote_name
    event_fields, outbox_fields = _columns()
    event_column = {f.name: quote(f.column) for f in WebhookEvent._meta.concrete_fields}
    return {
        "events": quote(WebhookEvent._meta.db_table),
        "event_columns": ", ".join(quote(f.column) for f in event_fields),
        "outbox": quote(OutboxEvent._meta.db_table),
        "outbox_columns": ", ".join(
            [
                *(quote(f.column) for f in outbox_fields.values()),
                quote(OutboxEvent._meta.get_field("created_at").column),
            ]
        ),
        "pk": quote(WebhookEvent._meta.pk.column),
        # The unique constraint that makes a second delivery of an event a duplicate.
        "key": f"{event_column['account']}, {event_column['external_event_id']}",
        "received_at": event_column["received_at"],
    }


@functools.cache
def _event_insert_sql() -> str:
    """One event and its outbox row, carrying the event's new id: one statement, one round trip.
    An event stored before inserts nothing, and so neither does its outbox row. Built once from
    the models' own columns; PostgreSQL gives each value its column's type."""
    n = _names()
    event_fields, outbox_fields = _columns()
    outbox_values = ", ".join(
        f"%s::jsonb || jsonb_build_object('webhook_event_id', e.{n['pk']})" if key == "outbox_payload" else "%s"
        for key in outbox_fields
    )
    return (
        f"WITH e AS (INSERT INTO {n['events']} ({n['event_columns']}) VALUES ({', '.join(['%s'] * len(event_fields))}) "
        f"ON CONFLICT ({n['key']}) DO NOTHING RETURNING {n['pk']}, {n['received_at']}) "
        f"INSERT INTO {n['outbox']} ({n['outbox_columns']}) SELECT {outbox_values}, e.{n['received_at']} FROM e "
        f"RETURNING (payload->>'webhook_event_id')::bigint"
    )


@functools.cache
def _events_insert_sql() -> str:
    """The batch statement, built once from the models' own columns and types: the rows travel as
    one JSON array, so the statement's text is the same for any number of them (and is prepared).

    Rows go in in key order: two processes' batches naming the same events (a provider's retry
    racing its first delivery) then wait on each other in one direction only, never in a cycle.
    """
    quote, n = connection.ops.quote_name, _names()
    event_fields, outbox_fields = _columns()
    # Typed as their columns: a value too long for one is refused, never cut.
    record = ", ".join(
        [f"{quote(f.attname)} {f.db_type(connection)}" for f in event_fields]
        + [f"{quote(key)} {f.db_type(connection)}" for key, f in outbox_fields.items()]
    )
    event_values = ", ".join(f"v.{quote(f.attname)}" for f in event_fields)
    outbox_values = ", ".join(
        f"v.{quote(key)} || jsonb_build_object('webhook_event_id', e.{n['pk']})"
        if key == "outbox_payload"
        else f"v.{quote(key)}"
        for key in outbox_fields
    )
    return (
        f"WITH v AS (SELECT * FROM jsonb_to_recordset(%s::jsonb) AS v({record})), "
        f"e AS (INSERT INTO {n['events']} ({n['event_columns']}) SELECT {event_values} FROM v ORDER BY {n['key']} "
        f"ON CONFLICT ({n['key']}) DO NOTHING RETURNING {n['pk']}, {n['key']}, {n['received_at']}), "
        f"o AS (INSERT INTO {n['outbox']} ({n['outbox_columns']}) SELECT {outbox_values}, e.{n['received_at']} "
        f"FROM e JOIN v USING ({n['key']}) ORDER BY e.{n['pk']}) "
        f"SELECT {n['pk']}, {n['key']} FROM e"
    )


def _json_value(value):
    # Timestamps in full (to the microsecond, with their offset) and UUIDs as text: what
    # PostgreSQL reads back as the same values.
    if isinstance(value, (datetime, uuid.UUID)):
        return value.isoformat() if isinstance(value, datetime) else str(value)
    raise TypeError(f"{type(value).__name__} is not a column value")


def event_insert(row: dict) -> int | None:
    """Insert one event with its outbox row; return the event's id, or None if it was stored
    before. Inside a caller's transaction too (an event stored before aborts nothing)."""
    if connection.vendor != "postgresql":
        return _event_insert_orm(row)
    event_fields, outbox_fields = _columns()
    params = [json.dumps(row[f.attname]) if f.attname == "headers" else row[f.attname] for f in event_fields]
    params += [json.dumps(row[key]) if key == "outbox_payload" else row[key] for key in outbox_fields]
    with connection.cursor() as cursor:
        cursor.execute(_event_insert_sql(), params)
        stored = cursor.fetchone()
    return stored[0] if stored else None


def _event_insert_orm(row: dict) -> int | None:
    # SQLite (`make run` without a database) has no INSERT in a WITH: two statements, kept
    # together by a savepoint.
    event_fields, outbox_fields = _columns()
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.create(**{f.attname: row[f.attname] for f in event_fields})
            outbox_row = OutboxEvent(
                **{f.attname: row[key] for key, f in outbox_fields.items()}, created_at=event.received_at
            )
            outbox_row.payload = {**outbox_row.payload, "webhook_event_id": event.pk}
            outbox_row.save(force_insert=True)
    except IntegrityError:
        return None
    return event.pk


def events_insert(rows: list[dict]) -> list[int | None]:
    """Insert the rows' events, each with its outbox row, in one statement (PostgreSQL). Return,
    row by row, the new event's id, or None for an event stored before, by an earlier statement or
    by an earlier row of these."""
    first_of_each: dict[tuple, dict] = {}
    for row in rows:
        first_of_each.setdefault(_key(row), row)
    if len(first_of_each) == 1:  # the single statement costs PostgreSQL less for one row
        [(key, row)] = first_of_each.items()
        stored = {key: event_insert(row)}
    else:
        with connection.cursor() as cursor:
            cursor.execute(_events_insert_sql(), [json.dumps(list(first_of_each.values()), default=_json_value)])
            stored = {(account_id, event_id): pk for pk, account_id, event_id in cursor.fetchall()}
    return [stored.pop(_key(row), None) for row in rows]


EVENT_INBOX = EventInbox()
