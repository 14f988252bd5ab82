"""The outbox relay: publishes committed ``OutboxEvent`` rows to every sink, in ``id`` order, at
least once, and marks them published.

Order: rows are read in ``id`` order and a batch is published whole or not at all; while a sink
is down the same batch is offered again (with backoff), never a later one, so nothing overtakes.
Two transactions that change one payment are serialised by its row lock, so the later one's
rows have the higher ids: a payment's events are published in the order they happened. Rows of
a transaction that commits late are simply read when it has committed (the relay reads what is
unpublished, not past a high-water mark, so none is skipped).

One relay publishes at a time: each holds a PostgreSQL advisory lock while it works (a second
replica, during a rollout, waits). The lock excludes relays, not writers: no row is locked while
a sink is called.

At least once: a batch a sink took may be offered again when marking it published fails or the
process dies in between. Consumers de-duplicate on the envelope's ``id``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from config.celery import backoff_seconds
from events.envelope import Envelope, envelope_of
from events.sinks import Sink, SinkUnavailable, sinks_configured
from payments.models import OutboxEvent, WebhookEvent

logger = logging.getLogger(__name__)

# pg advisory lock key of the relay ("outbox" in ASCII).
RELAY_LOCK_KEY = 0x6F7574626F78


@dataclass
class Relay:
    sinks: list[Sink] = field(default_factory=sinks_configured)
    batch_size: int = field(default_factory=lambda: settings.OUTBOX_RELAY_BATCH_SIZE)
    failures: int = 0  # consecutive failed batches: the backoff's exponent
    published: int = 0
    # Never yet: the monotonic clock counts from boot, so 0.0 would skip the first hour after one.
    _cleaned_at: float = float("-inf")

    def publish_batch(self) -> int:
        """Publish the oldest unpublished rows; how many. Raises ``SinkUnavailable``."""
        rows = list(OutboxEvent.objects.filter(published_at__isnull=True).order_by("id")[: self.batch_size])
        if not rows:
            return 0
        events = _envelopes(rows)
        external = [sink for sink in self.sinks if not sink.transactional]
        local = [sink for sink in self.sinks if sink.transactional]
        try:
            for sink in external:
                sink.publish(events)
        except SinkUnavailable as exc:
            self._failed(rows[0], str(exc))
            raise
        with transaction.atomic():
            for sink in local:
                sink.publish(events)
            OutboxEvent.objects.filter(pk__in=[row.pk for row in rows], published_at__isnull=True).update(
                published_at=timezone.now()
            )
        self.failures = 0
        self.published += len(rows)
        return len(rows)

    def _failed(self, head: OutboxEvent, error: str) -> None:
        # Shown on the head of the line, the row everything waits for (admin, metrics).
        OutboxEvent.objects.filter(pk=head.pk).update(publish_attempts=F("publish_attempts") + 1, last_error=error[:2000])
        self.failures += 1

    def backoff(self) -> float:
        return backoff_seconds(self.failures - 1, base=1.0, cap=settings.OUTBOX_RELAY_BACKOFF_MAX_SECONDS)

    def clean(self) -> int:
        """Delete published rows past the retention, a slice at a time (hourly)."""
        if time.monotonic() - self._cleaned_at < 3600:
            return 0
        self._cleaned_at = time.monotonic()
        cutoff = timezone.now() - timedelta(days=settings.OUTBOX_RETENTION_DAYS)
        ids = list(OutboxEvent.objects.filter(published_at__lt=cutoff).values_list("pk", flat=True)[:10_000])
        return OutboxEvent.objects.filter(pk__in=ids).delete()[0] if ids else 0

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def _envelopes(rows: list[OutboxEvent]) -> list[Envelope]:
    """The envelopes of a batch; a ``webhook.received`` gets the provider's body here (read in one
    query), so the webhook request path wrote no second copy of it."""
    bodies: dict[int, str] = {}
    if settings.EVENTS_WEBHOOK_BODY:
        wanted = [row.payload.get("webhook_event_id") for row in rows if row.event_type == "webhook.received"]
        if wanted:
            bodies = dict(
                WebhookEvent.objects.filter(pk__in=wanted, body_purged_at__isnull=True).values_list("pk", "raw_body")
            )
    events = []
    for row in rows:
        extra = None
        if row.event_type == "webhook.received" and settings.EVENTS_WEBHOOK_BODY:
            extra = {"body": _json_or_text(bodies.get(row.payload.get("webhook_event_id")))}
        events.append(envelope_of(row, extra=extra))
    return events


def _json_or_text(raw: str | None):
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # a form-encoded or XML body is passed on as its text


def relay_lock() -> bool:
    """Hold the relay's advisory lock on this connection (taken once; a new connection after a
    database restart takes it again)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
            "AND granted AND ((classid::bigint << 32) | objid::bigint) = %s)",
            [RELAY_LOCK_KEY],
        )
        if cursor.fetchone()[0]:
            return True
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [RELAY_LOCK_KEY])
        return cursor.fetchone()[0]


def relay_run(*, relay: Relay | None = None, stop: Callable[[], bool] = lambda: False, once: bool = False) -> Relay:
    """The relay's loop (``manage.py outbox_relay``): publish while there is work, sleep
    ``OUTBOX_RELAY_POLL_SECONDS`` when there is none, back off while a sink is down. ``once``:
    return when the outbox is empty (or a sink is down)."""
    relay = relay or Relay()
    # One long-lived connection (it holds the advisory lock); after an error it is closed and
    # the next query opens a new one.
    poll = settings.OUTBOX_RELAY_POLL_SECONDS
    try:
        while not stop():
            try:
                if connection.vendor == "postgresql" and not relay_lock():
                    if once:
                        return relay
                    time.sleep(max(poll, 1.0))  # another relay works; wait for its lock
                    continue
                relay.clean()  # at most hourly, busy or idle
                if relay.publish_batch():
                    continue
                if once:
                    return relay
                time.sleep(poll)
            except SinkUnavailable as exc:
                wait = relay.backoff()
                logger.warning("outbox relay: a sink is unavailable (%s); retrying in %.1fs", exc, wait)
                if once:
                    return relay
                _sleep(wait, stop)
            except Exception:  # noqa: BLE001 - the database went away, a bug: logged, retried, never lost
                relay.failures += 1
                wait = relay.backoff()
                logger.exception("outbox relay: batch failed; retrying in %.1fs", wait)
                if once:
                    raise
                connection.close()
                _sleep(wait, stop)
    finally:
        relay.close()
    return relay


def _sleep(seconds: float, stop: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while not stop() and time.monotonic() < end:
        time.sleep(min(0.2, end - time.monotonic()))
