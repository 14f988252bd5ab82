"""Replay of failed events and dead letters (``webhooks.replay.webhook_event_replay``): what each
kind becomes, what is refused, the audit entry, and that no payment change is ever applied twice,
including when staff and workers race on PostgreSQL."""

import threading
import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from core.status import PaymentStatus
from payments.models import AuditLog, MappingStatus, Payment, WebhookEvent
from providers.surepay import SurePayProvider
from tests.conftest import post_webhook, process_pending, sign, surepay_body
from tests.payments.conftest import make_staff
from webhooks import services
from webhooks.replay import ReplayOutcome, webhook_event_replay
from webhooks.services import EVENT_PUBLISHER

EventStatus = WebhookEvent.Status


@pytest.fixture
def bursar(school):
    return make_staff("bursar", school)


@pytest.fixture
def surepay_says_completed(monkeypatch):
    """SurePay started sending status COMPLETED, which our adapter rejected; this is the adapter
    after the fix (it reads COMPLETED as SUCCEEDED)."""
    original = SurePayProvider.parse

    def parse(self, *, payload, headers, account):
        if payload.get("status") == "COMPLETED":
            payload = {**payload, "status": "SUCCEEDED"}
        return original(self, payload=payload, headers=headers, account=account)

    def fix():
        monkeypatch.setattr(SurePayProvider, "parse", parse)

    return fix


def deliver(client, expected: int = 202, **fields) -> WebhookEvent:
    body = surepay_body(**fields)
    response = post_webhook(client, body, signature=sign(body))
    assert response.status_code == expected, response.content
    return WebhookEvent.objects.order_by("-pk").first()


def failed_event(client, fake_directory, monkeypatch, settings, **fields) -> WebhookEvent:
    """An event applied to its payment whose student mapping then failed for good."""
    settings.SCHOOL_API_ATTEMPTS = 1
    monkeypatch.setattr(services, "MAX_ATTEMPTS", 1)
    fake_directory.fail_next(1, status=503)
    event = deliver(client, **fields)
    assert process_pending() == ["failed"]
    event.refresh_from_db()
    assert (event.status, event.applied_at is not None) == (EventStatus.FAILED, True)
    return event


def queued_messages() -> int:
    return redis.Redis.from_url(settings.REDIS_URL).llen("celery")


def replays() -> list[AuditLog]:
    return list(AuditLog.objects.filter(action="webhook.replayed").order_by("pk"))


# --- Failed events --------------------------------------------------------------------------------


def test_a_failed_event_is_queued_again_and_published_on_commit(
    client, account, bursar, fake_directory, monkeypatch, settings, django_capture_on_commit_callbacks
):
    event = failed_event(client, fake_directory, monkeypatch, settings)
    with django_capture_on_commit_callbacks() as callbacks:
        result = webhook_event_replay(event_id=event.pk, actor=bursar)
        assert queued_messages() == 0  # nothing before the commit
    assert result.outcome == ReplayOutcome.REQUEUED
    assert result.detail == (
        "Queued for processing again. Its payment change was applied before and will not be applied again."
    )
    event.refresh_from_db()
    assert (event.status, event.attempts, event.last_error, event.processed_at) == (EventStatus.PENDING, 0, "", None)
    assert timezone.now() - event.next_attempt_at < timedelta(seconds=5)
    # Published the way a new event is: after commit, through the batch publisher, to the broker.
    for callback in callbacks:
        callback()
    EVENT_PUBLISHER.flush()
    assert queued_messages() == 1

    [entry] = replays()
    assert (entry.actor_type, entry.actor, entry.school_id, entry.target_type, entry.target_id) == (
        "staff",
        "bursar",
        event.account.school_id,
        "WebhookEvent",
        str(event.pk),
    )
    assert entry.details == {
        "previous_status": "failed",
        "outcome": "requeued",
        "previous_error": "gave up after 1 attempts: School Directory unavailable: HTTP 503",
        "previous_attempts": 1,
    }


def test_a_replayed_failed_event_is_processed_and_its_payment_changed_exactly_once(
    client, account, bursar, fake_directory, monkeypatch, settings
):
    # The directory does not know the student, so each event asks it again.
    deliver(client, event_id="e1", status="SUCCEEDED", provider_student_id="prov-999")
    assert process_pending() == ["new -> succeeded; student unmatched"]
    # A partial refund (40,000 of 100,000), applied, whose follow-up work then failed.
    refund = failed_event(
        client, fake_directory, monkeypatch, settings, event_id="e2", status="REVERSED", amount="40,000",
        provider_student_id="prov-999",
    )  # fmt: skip
    payment = Payment.objects.get()
    assert (payment.status, payment.refunded_amount_minor) == (PaymentStatus.PARTIALLY_REFUNDED, 40_000)

    assert webhook_event_replay(event_id=refund.pk, actor=bursar).outcome == ReplayOutcome.REQUEUED
    assert process_pending() == ["applied before; student unmatched"]

    refund.refresh_from_db()
    assert (refund.status, refund.attempts) == (EventStatus.PROCESSED, 1)
    payment.refresh_from_db()
    assert (payment.amount_minor, payment.status, payment.refunded_amount_minor) == (
        100_000,
        PaymentStatus.PARTIALLY_REFUNDED,
        40_000,
    )
    assert payment.mapping_status == MappingStatus.UNMATCHED
    # One application per event, ever.
    assert AuditLog.objects.filter(action="payment.webhook").count() == 2
    assert Payment.objects.count() == 1


# --- Refused --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [EventStatus.PENDING, EventStatus.PROCESSING, EventStatus.PROCESSED])
def test_other_states_are_refused_and_left_as_they_are(client, account, bursar, fake_directory, status):
    event = deliver(client)
    process_pending()
    WebhookEvent.objects.filter(pk=event.pk).update(status=status)
    before = WebhookEvent.objects.values().get(pk=event.pk)

    result = webhook_event_replay(event_id=event.pk, actor=bursar)

    assert result.outcome == ReplayOutcome.REFUSED
    assert result.detail == (
        f"Not replayed: the event is {status.label.lower()}; only failed events and dead letters can be replayed."
    )
    assert WebhookEvent.objects.values().get(pk=event.pk) == before
    assert Payment.objects.get().amount_minor == 100_000
    assert AuditLog.objects.filter(action="payment.webhook").count() == 1
    assert replays() == []


def test_replaying_a_processed_event_does_not_apply_it_again(client, account, bursar, fake_directory):
    event = deliver(client)
    process_pending()
    for _ in range(2):
        assert webhook_event_replay(event_id=event.pk, actor=bursar).outcome == ReplayOutcome.REFUSED
    assert process_pending() == []
    payment = Payment.objects.get()
    assert (payment.amount_minor, payment.status) == (100_000, PaymentStatus.SUCCEEDED)
    assert AuditLog.objects.filter(action="payment.webhook").count() == 1


@pytest.mark.parametrize("kind", ["failed", "dead letter"])
def test_a_purged_body_cannot_be_replayed(client, account, bursar, fake_directory, monkeypatch, settings, kind):
    if kind == "failed":
        event = failed_event(client, fake_directory, monkeypatch, settings)
    else:
        event = deliver(client, expected=400, amount="1,00")
    purged_at = timezone.now() - timedelta(days=1)
    WebhookEvent.objects.filter(pk=event.pk).update(raw_body="", headers={}, body_purged_at=purged_at)
    before = WebhookEvent.objects.values().get(pk=event.pk)

    result = webhook_event_replay(event_id=event.pk, actor=bursar)

    assert (result.outcome, result.detail) == (
        ReplayOutcome.PURGED,
        f"Not replayed: its body was purged on {purged_at:%Y-%m-%d} (retention policy).",
    )
    assert WebhookEvent.objects.values().get(pk=event.pk) == before
    assert replays() == []


# --- Dead letters ---------------------------------------------------------------------------------


def test_a_dead_letter_the_fixed_adapter_accepts_becomes_a_normal_event(
    client, account, bursar, fake_directory, surepay_says_completed
):
    dead = deliver(client, expected=400, status="COMPLETED")
    assert (dead.status, dead.external_event_id, [e["field"] for e in dead.errors]) == (
        EventStatus.REJECTED,
        None,
        ["status"],
    )
    surepay_says_completed()

    result = webhook_event_replay(event_id=dead.pk, actor=bursar)

    assert (result.outcome, result.detail) == (
        ReplayOutcome.REVIVED,
        "Valid now as event evt-001: queued for processing.",
    )
    dead.refresh_from_db()
    assert (dead.status, dead.external_event_id, dead.event_type, dead.errors, dead.last_error, dead.attempts) == (
        EventStatus.PENDING,
        "evt-001",
        "payment.succeeded",
        [],
        "",
        0,
    )
    assert dead.body_sha256 == ""  # only dead letters carry it
    assert process_pending() == ["new -> succeeded; student mapped"]
    payment = Payment.objects.get()
    assert (payment.external_txn_id, payment.amount_minor, payment.status) == (
        "txn-123",
        100_000,
        PaymentStatus.SUCCEEDED,
    )
    dead.refresh_from_db()
    assert (dead.status, dead.payment_id) == (EventStatus.PROCESSED, payment.pk)
    [entry] = replays()
    assert entry.details == {
        "previous_status": "rejected",
        "outcome": "revived",
        "event_id": "evt-001",
        "previous_attempts": 1,
        "previous_errors": [
            {"field": "status", "message": "Input should be 'SUCCEEDED', 'FAILED', 'PENDING' or 'REVERSED'"}
        ],
    }
    # The provider's retry of the same event now is a duplicate of the revived one.
    body = surepay_body()
    response = post_webhook(client, body, signature=sign(body))
    assert (response.status_code, response.json()["status"]) == (200, "processed")


def test_a_dead_letter_whose_event_was_redelivered_and_stored_is_superseded(
    client, account, bursar, fake_directory, surepay_says_completed
):
    dead = deliver(client, expected=400, status="COMPLETED")
    redelivered = deliver(client, status="SUCCEEDED")  # the provider's corrected delivery, same event id
    process_pending()
    surepay_says_completed()

    result = webhook_event_replay(event_id=dead.pk, actor=bursar)

    assert (result.outcome, result.detail) == (
        ReplayOutcome.SUPERSEDED,
        (
            f"Valid now, but the provider had redelivered event evt-001 and it is stored already "
            f"(#{redelivered.pk}): this copy is not applied."
        ),
    )
    dead.refresh_from_db()
    assert (dead.status, dead.external_event_id, dead.errors, dead.result, dead.applied_at) == (
        EventStatus.SUPERSEDED,
        None,
        [],
        f"superseded by event #{redelivered.pk} (evt-001): not applied",
        None,
    )
    assert process_pending() == []
    assert WebhookEvent.objects.filter(external_event_id="evt-001").get() == redelivered
    assert Payment.objects.get().amount_minor == 100_000
    assert AuditLog.objects.filter(action="payment.webhook").count() == 1
    assert replays()[0].details["superseded_by"] == redelivered.pk
    # Settled: a second replay is refused.
    assert webhook_event_replay(event_id=dead.pk, actor=bursar).outcome == ReplayOutcome.REFUSED


def test_a_dead_letter_that_is_still_invalid_stays_one_with_fresh_errors(client, account, bursar):
    dead = deliver(client, expected=400, amount="1,00")
    # Errors recorded by an older adapter; replay shows what the current one says.
    WebhookEvent.objects.filter(pk=dead.pk).update(errors=[{"field": "old", "message": "stale"}], last_error="stale")

    result = webhook_event_replay(event_id=dead.pk, actor=bursar)

    assert (result.outcome, result.detail) == (
        ReplayOutcome.STILL_INVALID,
        "Still invalid: amount: amount '1,00' is not a plain positive number",
    )
    dead.refresh_from_db()
    assert (dead.status, dead.external_event_id, dead.last_error, dead.errors) == (
        EventStatus.REJECTED,
        None,
        "Invalid webhook payload",
        [{"field": "amount", "message": "amount '1,00' is not a plain positive number"}],
    )
    assert Payment.objects.count() == 0
    [entry] = replays()
    assert (entry.details["outcome"], entry.details["previous_errors"], entry.details["errors"]) == (
        "still_invalid",
        [{"field": "old", "message": "stale"}],
        dead.errors,
    )
    # Replayable again later (say, after the next adapter fix).
    assert webhook_event_replay(event_id=dead.pk, actor=bursar).outcome == ReplayOutcome.STILL_INVALID


def test_a_malformed_dead_letter_is_still_invalid(client, account, bursar):
    body = b"amount=100&status=ok"  # form-encoded, not JSON
    assert post_webhook(client, body, signature=sign(body)).status_code == 400
    dead = WebhookEvent.objects.get()
    result = webhook_event_replay(event_id=dead.pk, actor=bursar)
    assert result.outcome == ReplayOutcome.STILL_INVALID
    dead.refresh_from_db()
    assert dead.status == EventStatus.REJECTED
    assert dead.errors == [
        {"field": "(body)", "message": "Malformed JSON body: Expecting value: line 1 column 1 (char 0)"}
    ]


# --- Races, on real PostgreSQL connections ---------------------------------------------------------


def run_together(*calls) -> list:
    """Run each call in its own thread (own database connection), all released at once."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index, call):
        barrier.wait()
        try:
            results[index] = call()
        except Exception as exc:  # noqa: BLE001 - surfaced by the caller's assertions
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index, call)) for index, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.django_db(transaction=True)
class TestRaces:
    def test_staff_replaying_one_failed_event_at_once_queue_it_once(
        self, client, account, fake_directory, monkeypatch, settings
    ):
        event = failed_event(client, fake_directory, monkeypatch, settings)
        staff = [make_staff(f"bursar{index}", account.school) for index in range(6)]
        EVENT_PUBLISHER.flush()
        queued_before = queued_messages()  # the delivery's own publication

        results = run_together(
            *[lambda user=user: webhook_event_replay(event_id=event.pk, actor=user) for user in staff]
        )

        outcomes = sorted(result.outcome for result in results)
        assert outcomes == [ReplayOutcome.REFUSED] * 5 + [ReplayOutcome.REQUEUED]
        assert len(replays()) == 1
        EVENT_PUBLISHER.flush()  # the one publication reached the broker (no worker here)
        assert queued_messages() == queued_before + 1
        monkeypatch.setattr(services, "MAX_ATTEMPTS", 9)
        assert process_pending() == ["applied before; student mapped"]
        assert AuditLog.objects.filter(action="payment.webhook").count() == 1
        assert Payment.objects.get().amount_minor == 100_000

    def test_a_replay_racing_workers_is_processed_once(self, client, account, fake_directory, monkeypatch, settings):
        """Workers grab the event the instant the replay commits (as a sweep or a fast broker
        would): one claims it, the others find it taken; the payment change is not repeated."""
        event = failed_event(client, fake_directory, monkeypatch, settings)
        monkeypatch.setattr(services, "MAX_ATTEMPTS", 9)
        bursar = make_staff("bursar", account.school)

        def worker():
            # Keeps trying until the replay has committed and someone has processed the event.
            results, deadline = [], time.monotonic() + 10
            while time.monotonic() < deadline:
                results.append(services.webhook_event_run(event_id=event.pk))
                if WebhookEvent.objects.filter(pk=event.pk, status=EventStatus.PROCESSED).exists():
                    break
            return [result for result in results if result is not None]

        results = run_together(
            lambda: webhook_event_replay(event_id=event.pk, actor=bursar), worker, worker, worker
        )

        assert results[0].outcome == ReplayOutcome.REQUEUED
        assert [result for worker_results in results[1:] for result in worker_results] == [
            "applied before; student mapped"
        ]
        event.refresh_from_db()
        assert (event.status, event.attempts) == (EventStatus.PROCESSED, 1)
        assert AuditLog.objects.filter(action="payment.webhook").count() == 1
        assert Payment.objects.get().amount_minor == 100_000

    def test_a_dead_letter_revived_while_the_provider_redelivers_it_is_stored_once(
        self, client, account, fake_directory, surepay_says_completed
    ):
        dead = deliver(client, expected=400, status="COMPLETED")
        surepay_says_completed()
        bursar = make_staff("bursar", account.school)
        body = surepay_body()

        def redeliver():
            return services.webhook_receive(
                provider_slug="surepay",
                school_code="ng",
                body=body,
                headers={"X-Signature": sign(body)},
                remote_addr="127.0.0.1",
            )

        replay, receipt = run_together(lambda: webhook_event_replay(event_id=dead.pk, actor=bursar), redeliver)

        stored = WebhookEvent.objects.get(external_event_id="evt-001")
        if replay.outcome == ReplayOutcome.REVIVED:  # the replay won: the redelivery is a duplicate
            assert (stored.pk, receipt.created) == (dead.pk, False)
        else:  # the redelivery won: the dead letter is superseded
            assert (replay.outcome, receipt.created) == (ReplayOutcome.SUPERSEDED, True)
            assert WebhookEvent.objects.get(pk=dead.pk).status == EventStatus.SUPERSEDED
        process_pending()
        assert Payment.objects.get().amount_minor == 100_000
        assert AuditLog.objects.filter(action="payment.webhook").count() == 1
