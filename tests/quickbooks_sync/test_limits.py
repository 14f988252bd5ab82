"""The per-company limits are kept before sending, by a limiter every worker shares through
Redis: requests per minute, per second, at once, and batch calls per minute. Clocks are scaled
(``QBO_LIMIT_TIME_SCALE``) so a "second" lasts 100 ms here."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections

from quickbooks_sync import services
from quickbooks_sync.coordination import LocalCoordinator, coordinator
from quickbooks_sync.errors import QboThrottled
from quickbooks_sync.models import QboConnection, QboCustomer, QboPaymentSync, SyncStatus
from tests.factories import AccountFactory, SchoolFactory, StudentFactory
from tests.quickbooks_sync.conftest import REALM, ready_payment


@pytest.fixture
def limits(settings):
    settings.QBO_LIMIT_TIME_SCALE = 10  # a second lasts 100 ms, a minute 6 s
    settings.QBO_LIMIT_MARGIN_MS = 0
    settings.QBO_LIMIT_PER_MINUTE = 1000
    settings.QBO_LIMIT_PER_SECOND = 5
    settings.QBO_LIMIT_CONCURRENT = 10
    settings.QBO_LIMIT_BATCH_PER_MINUTE = 40
    return settings


def in_threads(count, target):
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)


def max_in_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    return max(sum(1 for other in stamps if stamp <= other < stamp + window) for stamp in stamps)


@pytest.mark.parametrize("make", [coordinator, LocalCoordinator], ids=["redis", "in-process"])
class TestLimiter:
    def test_requests_per_second_across_threads(self, limits, make):
        limiter = make()
        started = time.monotonic()
        in_threads(4, lambda: [limiter.release_slot("r1", limiter.acquire_slot("r1")) for _ in range(6)])
        # 24 requests at 5 per 100 ms: the last ones wait about 400 ms.
        assert time.monotonic() - started >= 0.35
        # The limiter's own record of when each request was let through (ms).
        if isinstance(limiter, LocalCoordinator):
            stamps = list(limiter._sent["r1"])
        else:
            stamps = [score for _, score in limiter.redis.zrange("qbo:rate:r1:sent", 0, -1, withscores=True)]
        assert len(stamps) == 24
        assert max_in_window(stamps, 100) == 5

    def test_requests_per_minute(self, limits, make):
        limits.QBO_LIMIT_PER_MINUTE, limits.QBO_LIMIT_PER_SECOND = 8, 100
        limits.QBO_LIMIT_TIME_SCALE = 60  # a minute lasts one second
        limiter = make()
        started = time.monotonic()
        for _ in range(8):
            limiter.release_slot("r1", limiter.acquire_slot("r1"))
        assert time.monotonic() - started < 0.5
        limiter.release_slot("r1", limiter.acquire_slot("r1"))  # the ninth waits for the first to age out
        assert time.monotonic() - started >= 0.95

    def test_concurrent_requests(self, limits, make):
        limits.QBO_LIMIT_CONCURRENT, limits.QBO_LIMIT_PER_SECOND = 2, 1000
        limiter = make()
        active, peak, lock = [0], [0], threading.Lock()

        def worker():
            for _ in range(3):
                with limiter.slot("r1"):
                    with lock:
                        active[0] += 1
                        peak[0] = max(peak[0], active[0])
                    time.sleep(0.03)
                    with lock:
                        active[0] -= 1

        in_threads(5, worker)
        assert peak[0] == 2

    def test_batch_calls_per_minute(self, limits, make):
        limits.QBO_LIMIT_BATCH_PER_MINUTE, limits.QBO_LIMIT_PER_SECOND = 2, 1000
        limiter = make()
        for _ in range(2):
            limiter.release_slot("r1", limiter.acquire_slot("r1", batch=True))
        limiter.release_slot("r1", limiter.acquire_slot("r1"))  # a plain request is not held up
        with pytest.raises(QboThrottled) as raised:
            limiter.acquire_slot("r1", batch=True, max_wait=1)
        assert raised.value.sent is False
        assert 5 < raised.value.retry_after <= 6.1

    def test_a_pause_holds_every_request_of_the_company(self, limits, make):
        limiter = make()
        limiter.pause("r1", 0.3)
        with pytest.raises(QboThrottled):
            limiter.acquire_slot("r1", max_wait=0.1)
        limiter.release_slot("r2", limiter.acquire_slot("r2", max_wait=0.1))  # another company is free
        started = time.monotonic()
        limiter.release_slot("r1", limiter.acquire_slot("r1", max_wait=1))
        assert time.monotonic() - started >= 0.15
        assert limiter.stats("r1")["last_minute"] == 1


@pytest.mark.django_db(transaction=True)
class TestAgainstTheFake:
    """Two schools booked in the same QuickBooks company sync at once, in two lanes: the shared
    limiter keeps their combined rate within the company's limit, so the fake never says 429."""

    def setup_schools(self, fake_qbo, connection, count):
        schools = [connection.school, SchoolFactory(code="ng2", currency="UGX")]
        QboConnection.objects.create(
            **{
                f.name: getattr(connection, f.name)
                for f in QboConnection._meta.fields
                if f.name not in ("id", "school")
            },
            school=schools[1],
        )
        for school in schools:
            account = AccountFactory(school=school)
            for _ in range(count):
                student = StudentFactory(school=school)
                customer = fake_qbo.add_customer(REALM, f"{student.full_name} ({student.student_number}) {school.code}")
                QboCustomer.objects.create(
                    school=school,
                    realm_id=REALM,
                    student=student,
                    customer_id=customer["Id"],
                    display_name=customer["DisplayName"],
                )
                services.qbo_sync_request(payment_id=ready_payment(account, student).pk)
        return schools

    def sync_in_parallel(self, schools):
        def run(school_id):
            try:
                services.qbo_school_sync(school_id=school_id)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=run, args=(school.pk,)) for school in schools]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    def test_the_shared_limiter_keeps_both_lanes_under_the_limit(self, limits, fake_qbo, connection):
        limits.QBO_SYNC_CONCURRENCY = 4  # two lanes of four threads: eight senders, one limit
        limits.QBO_SYNC_BATCH_SIZE = 1  # one call per document: the most calls to pace
        # As in production our windows are a little longer than the company's
        # (QBO_LIMIT_MARGIN_MS): the fake counts arrivals, and busy threads on two cores delay
        # some by tens of milliseconds, a lot against a scaled 200 ms "second".
        limits.QBO_LIMIT_TIME_SCALE = fake_qbo.time_scale = 5
        limits.QBO_LIMIT_MARGIN_MS = 100
        fake_qbo.per_second = 5
        schools = self.setup_schools(fake_qbo, connection, count=12)
        started = time.monotonic()
        self.sync_in_parallel(schools)
        assert QboPaymentSync.objects.filter(status=SyncStatus.SYNCED).count() == 24
        assert fake_qbo.throttled == 0
        assert fake_qbo.companies[REALM].max_per_second <= 5
        # 26 requests at 5 per 300 ms take at least 1.2 s: the limiter did the pacing.
        assert time.monotonic() - started >= 1.2

    def test_without_the_limiter_the_fake_throttles(self, limits, fake_qbo, connection):
        """The control: the same work with our limiter set far above the company's limit."""
        limits.QBO_LIMIT_TIME_SCALE = fake_qbo.time_scale = 5
        fake_qbo.per_second = 5
        limits.QBO_LIMIT_PER_SECOND = 10_000
        limits.QBO_THROTTLE_PAUSE_SECONDS = 1
        limits.QBO_SYNC_BATCH_SIZE = 1
        schools = self.setup_schools(fake_qbo, connection, count=10)
        self.sync_in_parallel(schools)
        assert fake_qbo.throttled > 0
        # Throttled work is waiting for its turn, not failed and not doubled.
        assert not QboPaymentSync.objects.filter(status=SyncStatus.FAILED).exists()
        assert (
            len(fake_qbo.objects(REALM, "SalesReceipt"))
            == QboPaymentSync.objects.filter(status=SyncStatus.SYNCED).count()
        )
