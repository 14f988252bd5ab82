"""The janitor finds missed webhooks instead of waiting for them: payments left open with no
webhook are re-checked through the provider's ``fetch_status`` after 5 minutes, 1 hour and 1 day
(from the checkout), settled through the same finalize path, or expired.

The provider here works like M-Pesa's STK Push (an on-phone prompt, unsigned callbacks) and its
adapter talks over a real socket to a fake API server (``tests/payments/promptpay.py``)."""

import json
from datetime import timedelta

import pytest
from django.conf import settings as django_settings

from core.status import PaymentStatus
from payments import services
from payments.models import AuditLog, Payment, PaymentRequest
from tests.conftest import process_pending, wait_for
from tests.factories import PaymentRequestFactory, report

pytestmark = pytest.mark.django_db

MINUTE, HOUR, DAY = 60, 3600, 86400


@pytest.fixture
def kes_request(school, promptpay):
    return PaymentRequestFactory(school=school, amount_minor=150_000, currency="KES")


def prompt(kes_request):
    started = services.payment_checkout_start(
        payment_request_id=kes_request.pk, provider="promptpay", payer={"phone": "0712345678"}
    )
    assert started.prompt_sent
    return started.payment


def at(payment, seconds):
    return payment.checkout_created_at + timedelta(seconds=seconds)


def recheck(payment, seconds):
    """One janitor round at ``seconds`` after the checkout: claim what is due, check it."""
    now = at(payment, seconds)
    due = services.payments_recheck_due(now=now)
    results = [services.payment_status_recheck(payment_id=payment_id, now=now) for payment_id in due]
    payment.refresh_from_db()
    return due, results


def test_the_schedule_is_in_the_beat_schedule():
    assert django_settings.CELERY_BEAT_SCHEDULE["payments-recheck-due"] == {
        "task": "payments.tasks.payments_recheck_due",
        "schedule": 60,
    }
    assert django_settings.PAYMENT_RECHECK_SCHEDULE_SECONDS == [5 * MINUTE, HOUR, DAY]


def test_a_prompt_whose_callback_never_came_is_settled_by_the_janitor(kes_request, promptpay):
    fake, _ = promptpay
    payment = prompt(kes_request)
    assert payment.next_check_at == at(payment, 5 * MINUTE)

    assert recheck(payment, 4 * MINUTE) == ([], [])  # not due yet
    due, results = recheck(payment, 5 * MINUTE)
    assert (due, results) == ([payment.pk], ["provider says pending"])
    assert (payment.status, payment.status_checks, payment.next_check_at) == (PaymentStatus.PENDING, 1, at(payment, HOUR))
    # Claimed: a second janitor at the same moment finds nothing to do.
    assert services.payments_recheck_due(now=at(payment, 5 * MINUTE)) == []

    fake.settle(payment.provider_checkout_id, "succeeded")
    due, results = recheck(payment, HOUR)
    assert results == ["pending -> succeeded; request paid"]
    assert (payment.status, payment.external_txn_id, payment.next_check_at) == (PaymentStatus.SUCCEEDED, "QK0001RCPT", None)
    kes_request.refresh_from_db()
    assert (kes_request.status, kes_request.paid_payment_id) == (PaymentRequest.Status.PAID, payment.pk)
    # The exact requests the adapter sent the provider.
    status_calls = [r for r in fake.requests if r.method == "GET"]
    assert [r.path for r in status_calls] == [f"/v1/prompts/{payment.provider_checkout_id}"] * 2
    assert {r.headers["Authorization"] for r in status_calls} == {"Bearer pp-test-key"}
    actions = list(AuditLog.objects.filter(target_id=str(payment.pk)).order_by("id").values_list("action", flat=True))
    assert actions == [
        "payment.intent",
        "payment.checkout",
        "payment.rechecked",
        "payment.confirmed",
        "payment.finalize",
        "payment.rechecked",
    ]
    # Nothing is left for later rounds.
    assert recheck(payment, 2 * DAY) == ([], [])


def test_a_prompt_never_answered_expires_after_the_last_check(client, kes_request, promptpay):
    payment = prompt(kes_request)
    assert recheck(payment, 5 * MINUTE)[1] == ["provider says pending"]
    assert recheck(payment, HOUR)[1] == ["provider says pending"]
    assert payment.next_check_at == at(payment, DAY)
    assert recheck(payment, DAY)[1] == ["expired"]
    assert (payment.status, payment.status_checks, payment.next_check_at) == (PaymentStatus.EXPIRED, 3, None)
    expired = AuditLog.objects.get(action="payment.expired").details
    assert (expired["checks"], expired["reason"], expired["from"], expired["to"]) == (
        3, "still open after the last scheduled check", "pending", "expired",
    )  # fmt: skip
    kes_request.refresh_from_db()
    assert kes_request.status == PaymentRequest.Status.OPEN
    html = client.get(f"/payments/{payment.pk}/thanks").content.decode()
    assert "We did not hear back from PromptPay (test) in time" in html and "Try again" in html
    # The parent can start again: an expired payment is not in flight.
    assert services.payment_checkout_start(
        payment_request_id=kes_request.pk, provider="promptpay", payer={"phone": "0712345678"}
    ).payment.pk != payment.pk


def test_money_confirmed_after_expiry_is_still_taken(client, kes_request, promptpay):
    """The payer entered the PIN late; the callback comes after the janitor gave up."""
    fake, account = promptpay
    payment = prompt(kes_request)
    for seconds in (5 * MINUTE, HOUR, DAY):
        recheck(payment, seconds)
    assert payment.status == PaymentStatus.EXPIRED
    fake.settle(payment.provider_checkout_id, "succeeded")
    callback = {"prompt_id": payment.provider_checkout_id, "status": "succeeded", "amount_minor": 150_000, "currency": "KES"}
    response = client.post("/api/webhooks/promptpay/ng", data=json.dumps(callback), content_type="application/json")
    assert response.status_code == 202
    [result] = process_pending()
    assert "confirmed: expired -> succeeded; request paid" in result
    kes_request.refresh_from_db()
    assert kes_request.paid_payment_id == payment.pk


def test_a_callback_that_arrives_is_confirmed_and_settles_the_request(client, kes_request, promptpay):
    fake, _ = promptpay
    payment = prompt(kes_request)
    fake.settle(payment.provider_checkout_id, "succeeded")
    callback = {"prompt_id": payment.provider_checkout_id, "status": "succeeded", "amount_minor": 150_000, "currency": "KES"}
    client.post("/api/webhooks/promptpay/ng", data=json.dumps(callback), content_type="application/json")
    [result] = process_pending()
    assert result.startswith("pending -> processing; confirmed: processing -> succeeded; request paid")
    # Settled by its callback: the janitor lets it go without asking the provider again.
    calls = len(fake.requests)
    assert recheck(payment, 5 * MINUTE) == ([], [])
    assert len(fake.requests) == calls


def test_an_unreachable_provider_is_asked_again_but_never_expires_the_payment(kes_request, promptpay):
    fake, _ = promptpay
    payment = prompt(kes_request)
    fake.fail_next(100, 503)
    for seconds in (5 * MINUTE, HOUR, DAY):
        assert recheck(payment, seconds)[1] == ["no answer"]
    assert payment.status == PaymentStatus.PENDING
    assert payment.last_check_error == "PromptPay (test) answered HTTP 503"
    assert payment.next_check_at == at(payment, DAY) + timedelta(seconds=DAY)  # once a day from now on
    with fake.lock:
        fake._failures.clear()
    fake.settle(payment.provider_checkout_id, "succeeded")
    recheck(payment, 2 * DAY)
    assert (payment.status, payment.last_check_error) == (PaymentStatus.SUCCEEDED, "")


def test_a_payment_the_provider_does_not_know_expires_at_the_end(kes_request, promptpay):
    payment = prompt(kes_request)
    Payment.objects.filter(pk=payment.pk).update(provider_checkout_id="pp_unknown")
    for seconds in (5 * MINUTE, HOUR, DAY):
        recheck(payment, seconds)
    assert payment.status == PaymentStatus.EXPIRED
    assert payment.last_check_error == "PromptPay (test) refused the request (HTTP 404): unknown prompt"


def test_a_given_up_payment_is_still_checked_and_its_money_taken(kes_request, promptpay):
    fake, _ = promptpay
    payment = prompt(kes_request)
    services.payment_checkout_abandon(payment_id=payment.pk, payment_request_id=kes_request.pk, actor_type="parent")
    fake.settle(payment.provider_checkout_id, "succeeded")
    assert recheck(payment, 5 * MINUTE)[1] == ["cancelled -> succeeded; request paid"]


def test_manual_payments_and_settled_payments_are_not_checked(kes_request, promptpay, dummy_account):
    manual = services.manual_payment_submit(
        payment_request_id=kes_request.pk, method="cash", manual_reference="", amount_minor=150_000
    )
    payment = prompt(kes_request)
    report(payment, status=PaymentStatus.FAILED)
    assert services.payments_recheck_due(now=at(payment, DAY)) == []
    payment.refresh_from_db()
    manual.refresh_from_db()
    assert (payment.next_check_at, manual.next_check_at) == (None, None)


def test_a_dummy_payment_whose_webhook_was_lost_is_settled(payment_request, dummy_account):
    payment = services.payment_checkout_start(payment_request_id=payment_request.pk, provider="dummy").payment
    assert recheck(payment, 5 * MINUTE)[1] == ["provider says pending"]
    # The payer paid on the simulate page, but its webhook never reached us.
    services.dummy_payment_simulate(payment_id=payment.pk, outcome="succeeded")
    assert recheck(payment, HOUR)[1] == ["pending -> succeeded; request paid"]


@pytest.mark.django_db(transaction=True)
def test_beat_and_a_real_worker_settle_a_missed_payment(kes_request, promptpay, celery_worker):
    """The janitor's tasks on the real broker: beat's task claims the due payment, a worker asks
    the provider over the socket and settles it."""
    from payments.tasks import payments_recheck_due_task

    fake, _ = promptpay
    payment = prompt(kes_request)
    fake.settle(payment.provider_checkout_id, "succeeded")
    Payment.objects.filter(pk=payment.pk).update(next_check_at=payment.checkout_created_at)  # due now
    payments_recheck_due_task.delay()
    wait_for(lambda: PaymentRequest.objects.get(pk=kes_request.pk).status == PaymentRequest.Status.PAID, timeout=20)
    # The check is counted once the answer is recorded, in the worker's next transaction.
    wait_for(lambda: Payment.objects.get(pk=payment.pk).status_checks == 1, timeout=20)
    payment.refresh_from_db()
    assert (payment.status, payment.status_checks, payment.next_check_at) == (PaymentStatus.SUCCEEDED, 1, None)
