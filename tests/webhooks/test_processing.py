"""Follow-up work after a webhook is stored: a real Celery worker consuming the real Redis
broker maps the student through the fake School Directory over a socket."""

from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from core.status import PaymentStatus
from payments.models import AuditLog, MappingStatus, OutboxEvent, Payment, ProviderStudentLink, Student, WebhookEvent
from tests.conftest import post_webhook, sign, surepay_body, wait_for
from webhooks import services

EventStatus = WebhookEvent.Status


def deliver(client, **fields):
    body = surepay_body(**fields)
    response = post_webhook(client, body, signature=sign(body))
    assert response.status_code == 202
    return WebhookEvent.objects.get(external_event_id=fields.get("event_id", "evt-001"))


def finished(event):
    def check():
        event.refresh_from_db()
        return event.status in (EventStatus.PROCESSED, EventStatus.FAILED)

    return check


@pytest.mark.django_db(transaction=True)
class TestWithAWorker:
    def test_the_worker_maps_the_student(self, client, account, fake_directory, celery_worker):
        event = deliver(client)
        wait_for(finished(event))
        assert (event.status, event.result, event.attempts) == (
            EventStatus.PROCESSED,
            "new -> succeeded; student mapped",
            1,
        )
        payment = Payment.objects.get()
        assert payment.mapping_status == MappingStatus.MAPPED
        assert (payment.student.student_number, payment.student.full_name) == ("STU-0001", "Amina Nakato")
        assert ProviderStudentLink.objects.get().student == payment.student
        assert AuditLog.objects.get(action="payment.mapped").details == {"student_number": "STU-0001", "source": "directory"}
        assert len(fake_directory.lookups()) == 1

    def test_a_known_mapping_is_not_looked_up_again(self, client, account, fake_directory, celery_worker):
        wait_for(finished(deliver(client, event_id="e1", external_txn_id="t1")))
        wait_for(finished(deliver(client, event_id="e2", external_txn_id="t2")))
        assert list(Payment.objects.values_list("student__student_number", flat=True)) == ["STU-0001", "STU-0001"]
        assert Student.objects.count() == 1
        assert len(fake_directory.lookups()) == 1
        assert AuditLog.objects.filter(action="payment.mapped", details__source="cache").count() == 1

    def test_an_unknown_student_leaves_the_payment_unmatched_never_dropped(
        self, client, account, fake_directory, celery_worker
    ):
        event = deliver(client, provider_student_id="prov-999")
        wait_for(finished(event))
        assert event.status == EventStatus.PROCESSED
        payment = Payment.objects.get()
        assert (payment.status, payment.mapping_status, payment.student) == (
            PaymentStatus.SUCCEEDED,
            MappingStatus.UNMATCHED,
            None,
        )
        assert AuditLog.objects.filter(action="payment.unmatched", target_id=str(payment.pk)).exists()

    def test_a_directory_outage_is_retried_until_it_recovers(
        self, client, account, fake_directory, celery_worker, settings
    ):
        settings.SCHOOL_API_ATTEMPTS = 1
        settings.TASK_RETRY_BASE_SECONDS = 0.05
        fake_directory.fail_next(2, status=503)
        event = deliver(client)
        wait_for(finished(event))
        assert (event.status, event.attempts) == (EventStatus.PROCESSED, 3)
        assert Payment.objects.get().mapping_status == MappingStatus.MAPPED

    def test_a_long_outage_ends_visibly_failed(self, client, account, fake_directory, celery_worker, settings):
        settings.SCHOOL_API_ATTEMPTS = 1
        settings.TASK_RETRY_BASE_SECONDS = 0.01
        fake_directory.fail_next(100, status=503)
        event = deliver(client)
        wait_for(finished(event), timeout=30)
        assert event.status == EventStatus.FAILED
        assert event.last_error == "gave up after 9 attempts: School Directory unavailable: HTTP 503"
        payment = Payment.objects.get()
        # The money is kept; only the mapping is marked failed for staff.
        assert (payment.status, payment.mapping_status) == (PaymentStatus.SUCCEEDED, MappingStatus.FAILED)
        assert payment.mapping_error == event.last_error
        assert AuditLog.objects.filter(action="webhook.failed", target_id=str(event.pk)).exists()


@pytest.mark.django_db
class TestIdempotence:
    def test_processing_an_event_twice_does_the_work_once(self, client, account, fake_directory):
        event = deliver(client)
        assert services.webhook_event_process(event_id=event.pk) == "new -> succeeded; student mapped"
        assert services.webhook_event_process(event_id=event.pk) is None
        assert len(fake_directory.lookups()) == 1
        assert AuditLog.objects.filter(action="payment.mapped").count() == 1

    def test_a_known_students_event_is_applied_mapped_and_finished_in_one_transaction(
        self, client, account, fake_directory, django_assert_max_num_queries
    ):
        services.webhook_event_process(event_id=deliver(client, event_id="e1", external_txn_id="t1").pk)
        event = deliver(client, event_id="e2", external_txn_id="t2")
        # One transaction: the claim, the payment, its facts, audit and events, the mark (here a savepoint inside the test's transaction).
        with django_assert_max_num_queries(14):
            assert services.webhook_event_process(event_id=event.pk) == "new -> succeeded; student mapped"
        event.refresh_from_db()
        assert (event.status, event.attempts, event.applied_at) == (EventStatus.PROCESSED, 1, event.processed_at)
        payment = event.payment
        assert (payment.status, payment.amount_minor, payment.student.student_number) == ("succeeded", 100_000, "STU-0001")
        assert len(fake_directory.lookups()) == 1
        mapped = AuditLog.objects.get(action="payment.mapped", target_id=str(payment.pk))
        assert mapped.details == {"student_number": "STU-0001", "source": "cache"}
        assert list(OutboxEvent.objects.filter(key=f"payment:{payment.pk}").order_by("pk").values_list("event_type", flat=True)) == [
            "payment.created", "payment.succeeded", "payment.mapped"
        ]

    def test_a_failure_while_applying_counts_the_attempt_and_keeps_nothing_half_done(
        self, client, account, fake_directory, monkeypatch
    ):
        event = deliver(client)
        real_apply = services.payment_event_apply

        def fails_once(**kwargs):
            monkeypatch.setattr(services, "payment_event_apply", real_apply)
            real_apply(**kwargs)  # the payment is written, then the transaction fails
            raise RuntimeError("database went away")

        monkeypatch.setattr(services, "payment_event_apply", fails_once)
        assert services.webhook_event_run(event_id=event.pk) == "retrying"
        event.refresh_from_db()
        assert (event.status, event.attempts, event.applied_at, event.last_error) == (
            EventStatus.PENDING, 1, None, "database went away"
        )
        assert not Payment.objects.exists() and not AuditLog.objects.filter(action="payment.webhook").exists()
        WebhookEvent.objects.filter(pk=event.pk).update(next_attempt_at=None)
        assert services.webhook_event_run(event_id=event.pk) == "new -> succeeded; student mapped"
        event.refresh_from_db()
        assert (event.status, event.attempts) == (EventStatus.PROCESSED, 2)
        assert Payment.objects.get().amount_minor == 100_000

    def test_a_fresh_claim_is_respected_and_a_stale_one_taken_over(self, client, account, fake_directory):
        event = deliver(client)
        WebhookEvent.objects.filter(pk=event.pk).update(status=EventStatus.PROCESSING, claimed_at=timezone.now())
        assert services.webhook_event_process(event_id=event.pk) is None
        WebhookEvent.objects.filter(pk=event.pk).update(claimed_at=timezone.now() - timedelta(hours=1))
        assert services.webhook_event_process(event_id=event.pk) == "new -> succeeded; student mapped"

    def test_an_event_is_applied_once_even_if_processed_again_after_a_crash(self, client, account, fake_directory):
        """A worker died after applying the event but before marking it processed: the takeover
        maps the student but does not apply the event to the payment a second time."""
        deliver(client, event_id="e1", status="SUCCEEDED")
        deliver(client, event_id="e2", status="REVERSED", amount="40,000")
        first, refund = WebhookEvent.objects.order_by("pk")
        services.webhook_event_process(event_id=first.pk)
        services.webhook_event_process(event_id=refund.pk)
        WebhookEvent.objects.filter(pk=refund.pk).update(status=EventStatus.PENDING)
        assert services.webhook_event_process(event_id=refund.pk) == "applied before; student mapped"
        payment = Payment.objects.get()
        assert (payment.status, payment.refunded_amount_minor) == (PaymentStatus.PARTIALLY_REFUNDED, 40_000)
        assert AuditLog.objects.filter(action="payment.webhook").count() == 2


@pytest.mark.django_db
class TestSweep:
    def queued(self):
        return redis.Redis.from_url(settings.REDIS_URL).llen("celery")

    def test_events_stored_but_never_processed_are_enqueued(self, client, account, django_capture_on_commit_callbacks):
        old = deliver(client, event_id="old", external_txn_id="t-old")
        fresh = deliver(client, event_id="fresh", external_txn_id="t-fresh")
        done = deliver(client, event_id="done", external_txn_id="t-done")
        an_hour_ago = timezone.now() - timedelta(hours=1)
        WebhookEvent.objects.filter(pk__in=[old.pk, done.pk]).update(received_at=an_hour_ago)
        WebhookEvent.objects.filter(pk=done.pk).update(status=EventStatus.PROCESSED)
        assert self.queued() == 0  # on_commit never fires inside a test transaction

        with django_capture_on_commit_callbacks(execute=True):
            assert services.webhook_events_sweep() == [old.pk]
        assert self.queued() == 1
        # Not enqueued again while its message may still be waiting in the queue.
        assert services.webhook_events_sweep() == []
        assert fresh.pk not in services.webhook_events_sweep()

    def test_a_stale_claim_is_swept(self, client, account):
        event = deliver(client)
        WebhookEvent.objects.filter(pk=event.pk).update(
            status=EventStatus.PROCESSING, claimed_at=timezone.now() - timedelta(hours=1)
        )
        assert services.webhook_events_sweep() == [event.pk]
