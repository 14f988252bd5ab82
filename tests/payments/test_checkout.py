""""Pay now": the payment intent, the provider's checkout, reuse or refusal of a second one, and
the pay page a parent sees for open, paid, cancelled and unknown links."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from core.status import PaymentStatus
from payments import services
from payments.models import AuditLog, Payment, PaymentRequest
from payments.services import checkout
from providers import registry
from providers.base import CheckoutResult, NormalizedStatus, ProviderAdapter
from providers.errors import ProviderRejected, ProviderUnavailable
from tests.factories import AccountFactory, PaymentRequestFactory, StudentFactory, report
from tests.payments.conftest import csrf_token

pytestmark = pytest.mark.django_db


def start(payment_request, provider="dummy", **payer):
    return services.payment_checkout_start(payment_request_id=payment_request.pk, provider=provider, payer=payer)


class FlakyProvider(ProviderAdapter):
    """A provider whose checkout API answers with whatever the test queues."""

    slug = "flaky"
    display_name = "Flaky Pay"
    answers: list = []

    def create_checkout(self, *, payment, return_urls):
        FlakyProvider.seen.append((payment.pk, return_urls))
        answer = FlakyProvider.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def flaky(monkeypatch, school):
    monkeypatch.setitem(registry.PROVIDERS, "flaky", f"{__name__}.FlakyProvider")
    registry._load.cache_clear()
    FlakyProvider.answers, FlakyProvider.seen = [], []
    yield AccountFactory(school=school, provider="flaky")
    registry._load.cache_clear()


# --- The service --------------------------------------------------------------------------------


def test_pay_now_creates_the_intent_and_the_dummy_checkout(payment_request, dummy_account):
    started = start(payment_request)
    payment = Payment.objects.get()
    assert started.payment.pk == payment.pk and not started.reused
    assert started.redirect_url == f"https://pay.example.org/payments/simulate/{payment.pk}"
    assert (payment.status, payment.amount_minor, payment.currency) == (PaymentStatus.PENDING, 450_000, "UGX")
    assert (payment.account, payment.provider, payment.payment_request) == (dummy_account, "dummy", payment_request)
    assert payment.reference.startswith("P") and len(payment.reference) == 12 and payment.reference.isalnum()
    assert payment.provider_checkout_id == f"dchk_{payment.pk.hex}"
    assert payment.checkout_url == started.redirect_url
    assert payment.provider_data["dummy_return_url"] == f"https://pay.example.org/payments/{payment.pk}/thanks"
    # The pay link names the student: nothing for the School Directory to look up.
    assert (payment.student, payment.mapping_status) == (payment_request.student, "mapped")
    # The janitor asks about it five minutes after the checkout started if no webhook came.
    assert payment.next_check_at == payment.checkout_created_at + timedelta(seconds=300)
    intent = AuditLog.objects.get(action="payment.intent")
    assert intent.details == {
        "payment_request_id": payment_request.pk,
        "provider": "dummy",
        "reference": payment.reference,
        "amount_minor": 450_000,
        "currency": "UGX",
    }
    assert intent.actor_type == "parent"
    assert AuditLog.objects.filter(action="payment.checkout", target_id=str(payment.pk)).count() == 1


def test_the_provider_is_given_our_return_urls(payment_request, flaky):
    FlakyProvider.answers = [CheckoutResult(redirect_url="https://flaky.example/c/1", checkout_id="c1", external_txn_id="t1", provider_data={"session": "s1"})]
    started = start(payment_request, "flaky")
    [(payment_id, urls)] = FlakyProvider.seen
    assert urls.success_url == f"https://pay.example.org/payments/{payment_id}/thanks"
    assert urls.cancel_url == f"https://pay.example.org/pay/{payment_request.token}/"
    assert urls.callback_url == "https://pay.example.org/api/webhooks/flaky/ng"
    payment = started.payment
    assert (payment.provider_checkout_id, payment.external_txn_id) == ("c1", "t1")
    assert payment.provider_data == {"session": "s1", "prompt_sent": False, "checkout_message": ""}


def test_a_second_click_reuses_the_checkout_under_way(payment_request, dummy_account):
    first = start(payment_request)
    second = start(payment_request)
    assert second.reused and second.payment.pk == first.payment.pk
    assert second.redirect_url == first.redirect_url
    assert Payment.objects.count() == 1
    assert AuditLog.objects.filter(action="payment.intent").count() == 1


def test_another_provider_is_refused_while_a_checkout_is_under_way(payment_request, dummy_account, flaky):
    first = start(payment_request)
    with pytest.raises(services.CheckoutRefused) as refused:
        start(payment_request, "flaky")
    assert refused.value.code == "another_checkout_in_progress"
    assert refused.value.detail == "A payment with Dummy (development) is already under way."
    assert refused.value.payment.pk == first.payment.pk
    assert Payment.objects.count() == 1


def test_after_giving_up_the_payer_can_choose_another_way(payment_request, dummy_account, flaky):
    first = start(payment_request)
    services.payment_checkout_abandon(
        payment_id=first.payment.pk, payment_request_id=payment_request.pk, actor_type="parent"
    )
    FlakyProvider.answers = [CheckoutResult(redirect_url="https://flaky.example/c/2", checkout_id="c2")]
    second = start(payment_request, "flaky")
    assert second.redirect_url == "https://flaky.example/c/2"
    first.payment.refresh_from_db()
    # Cancelled here, but still on the janitor's list: the dummy could still take the money.
    assert first.payment.status == PaymentStatus.CANCELLED
    assert first.payment.next_check_at is not None
    assert AuditLog.objects.get(action="payment.abandoned").details["reason"] == "given up by the payer"


def test_a_payment_the_provider_is_processing_cannot_be_given_up(payment_request, dummy_account):
    first = start(payment_request)
    report(first.payment, status=PaymentStatus.PROCESSING)
    with pytest.raises(services.CheckoutRefused) as refused:
        services.payment_checkout_abandon(payment_id=first.payment.pk, payment_request_id=payment_request.pk, actor_type="parent")
    assert refused.value.code == "checkout_processing"


def test_a_provider_outage_keeps_the_intent_open_for_the_janitor_but_does_not_block(payment_request, flaky):
    FlakyProvider.answers = [
        ProviderUnavailable("Flaky Pay timed out"),
        CheckoutResult(redirect_url="https://flaky.example/c/3", checkout_id="c3"),
    ]
    with pytest.raises(services.CheckoutFailed) as failed:
        start(payment_request, "flaky")
    assert failed.value.detail == "Flaky Pay is not answering. Please try again in a few minutes."
    broken = failed.value.payment
    broken.refresh_from_db()
    # The provider may have started it anyway: it stays open, for the janitor to ask about.
    assert (broken.status, broken.checkout_error) == (PaymentStatus.PENDING, "Flaky Pay timed out")
    assert broken.next_check_at is not None
    retried = start(payment_request, "flaky")
    assert not retried.reused and retried.payment.pk != broken.pk
    broken.refresh_from_db()
    assert broken.status == PaymentStatus.CANCELLED  # superseded, still checked by the janitor
    assert AuditLog.objects.get(action="payment.abandoned").details["reason"] == "superseded: Flaky Pay timed out"


def test_a_refusal_by_the_provider_fails_the_intent(payment_request, flaky):
    FlakyProvider.answers = [ProviderRejected("Flaky Pay refused the request (HTTP 400): currency not supported")]
    with pytest.raises(services.CheckoutFailed, match="could not start this payment"):
        start(payment_request, "flaky")
    payment = Payment.objects.get()
    assert (payment.status, payment.next_check_at) == (PaymentStatus.FAILED, None)
    entry = AuditLog.objects.get(action="payment.checkout_failed")
    assert entry.details["error"] == "Flaky Pay refused the request (HTTP 400): currency not supported"


def test_an_intent_whose_checkout_never_came_back_is_dropped_after_a_while(payment_request, dummy_account, settings):
    # A process died between creating the intent and saving its checkout.
    start(payment_request)
    Payment.objects.update(checkout_created_at=None, created_at=timezone.now() - timedelta(seconds=settings.CHECKOUT_STALE_SECONDS + 1))
    again = start(payment_request)
    assert not again.reused
    assert list(Payment.objects.order_by("created_at").values_list("status", flat=True)) == ["cancelled", "pending"]


def test_a_checkout_being_created_is_waited_for_then_refused(payment_request, dummy_account, settings):
    settings.CHECKOUT_WAIT_SECONDS = 0.3
    start(payment_request)
    Payment.objects.update(checkout_created_at=None)  # as if another click were still asking the provider
    with pytest.raises(services.CheckoutRefused) as refused:
        start(payment_request)
    assert refused.value.code == "checkout_in_progress"


def test_a_cancelled_request_cannot_be_paid(payment_request, dummy_account):
    PaymentRequest.objects.filter(pk=payment_request.pk).update(status=PaymentRequest.Status.CANCELLED)
    with pytest.raises(services.CheckoutRefused) as refused:
        start(payment_request)
    assert refused.value.code == "request_closed"
    assert Payment.objects.count() == 0


def test_a_paid_request_cannot_be_paid_again(payment_request, dummy_account):
    payment = start(payment_request).payment
    services.payment_provider_status_apply(
        payment_id=payment.pk,
        status=NormalizedStatus(status=PaymentStatus.SUCCEEDED, amount_minor=450_000, currency="UGX"),
        source="test",
    )
    with pytest.raises(services.CheckoutRefused) as refused:
        start(payment_request)
    assert (refused.value.code, refused.value.detail) == ("request_paid", "This has already been paid.")
    assert Payment.objects.count() == 1


def test_providers_the_school_has_not_enabled_are_refused(payment_request, dummy_account):
    dummy_account.active = False
    dummy_account.save()
    for provider, code in (("dummy", "provider_unavailable"), ("nope", "provider_unknown"), ("surepay", "provider_unavailable")):
        with pytest.raises(services.CheckoutRefused) as refused:
            start(payment_request, provider)
        assert refused.value.code == code
    assert Payment.objects.count() == 0


def test_a_phone_prompt_needs_a_valid_number(payment_request, promptpay):
    fake, _ = promptpay
    with pytest.raises(services.CheckoutRefused) as refused:
        start(payment_request, "promptpay", phone="12345")
    assert (refused.value.code, refused.value.detail) == ("phone_invalid", "Enter a Safaricom number such as 0712 345 678.")
    started = start(payment_request, "promptpay", phone="0712 345 678")
    assert started.prompt_sent and started.redirect_url == ""
    assert started.payment.payer == {"phone": "254712345678"}
    [sent] = [r for r in fake.requests if r.method == "POST"]
    assert sent.json()["phone"] == "254712345678"
    assert sent.json()["callback_url"] == "https://pay.example.org/api/webhooks/promptpay/ng"


# --- The pay page -------------------------------------------------------------------------------


def test_the_pay_page_shows_what_is_due_and_the_ways_to_pay(client, payment_request, dummy_account, account):
    response = client.get(f"/pay/{payment_request.token}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Nile Gardens School" in html
    assert 'Amina Nakato <span class="nowrap">(STU-0001)</span>' in html
    assert '<p class="amount" data-testid="amount">UGX 450,000</p>' in html
    assert 'name="provider" value="dummy">Pay with Dummy (development)</button>' in html
    # SurePay only pushes webhooks: it cannot start a checkout, so it is not offered.
    assert 'value="surepay"' not in html
    assert response["Cache-Control"].startswith("max-age=0")


def test_amounts_are_formatted_for_the_currency(client, school, dummy_account):
    school.currency = "KES"
    school.save()
    payment_request = PaymentRequestFactory(school=school, amount_minor=150_050, currency="KES", due_date="2026-01-31")
    html = client.get(f"/pay/{payment_request.token}/").content.decode()
    assert "KES 1,500.50" in html
    assert "31 January 2026" in html


def test_paid_cancelled_and_unknown_links_show_a_clear_page(client, payment_request, dummy_account):
    response = client.get("/pay/not-a-real-token/")
    assert response.status_code == 404
    assert "This pay link is not valid" in response.content.decode()

    payment = start(payment_request).payment
    services.payment_provider_status_apply(
        payment_id=payment.pk,
        status=NormalizedStatus(status=PaymentStatus.SUCCEEDED, amount_minor=450_000, currency="UGX"),
        source="test",
    )
    response = client.get(f"/pay/{payment_request.token}/")
    assert response.status_code == 200
    assert "Already paid" in response.content.decode()
    # Pay now on a paid link: the same clear page, no second payment.
    response = client.post(f"/pay/{payment_request.token}/checkout", {"provider": "dummy"})
    assert (response.status_code, "Already paid" in response.content.decode()) == (200, True)

    cancelled = PaymentRequestFactory(school=payment_request.school, status=PaymentRequest.Status.CANCELLED)
    response = client.get(f"/pay/{cancelled.token}/")
    assert response.status_code == 200
    assert "This payment request is no longer open" in response.content.decode()
    assert Payment.objects.count() == 1


def test_pay_now_redirects_to_the_provider(client, payment_request, dummy_account):
    response = client.post(f"/pay/{payment_request.token}/checkout", {"provider": "dummy"})
    payment = Payment.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"https://pay.example.org/payments/simulate/{payment.pk}"


def test_pay_now_needs_the_csrf_token(payment_request, dummy_account):
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(f"/pay/{payment_request.token}/")
    assert browser.post(f"/pay/{payment_request.token}/checkout", {"provider": "dummy"}).status_code == 403
    assert Payment.objects.count() == 0
    response = browser.post(
        f"/pay/{payment_request.token}/checkout",
        {"provider": "dummy", "csrfmiddlewaretoken": csrf_token(page.content.decode())},
    )
    assert response.status_code == 302


def test_a_refused_checkout_explains_on_the_pay_page(client, payment_request, dummy_account, flaky):
    client.post(f"/pay/{payment_request.token}/checkout", {"provider": "dummy"})
    response = client.post(f"/pay/{payment_request.token}/checkout", {"provider": "flaky"})
    assert response.status_code == 409
    html = response.content.decode()
    assert 'id="error-summary" role="alert" tabindex="-1" autofocus' in html
    assert "<li>A payment with Dummy (development) is already under way.</li>" in html
    assert "I did not pay: choose another way" in html
    payment = Payment.objects.get()
    response = client.post(f"/pay/{payment_request.token}/abandon", {"payment_id": str(payment.pk)})
    assert response.status_code == 302
    FlakyProvider.answers = [CheckoutResult(redirect_url="https://flaky.example/c/9", checkout_id="c9")]
    response = client.post(f"/pay/{payment_request.token}/checkout", {"provider": "flaky"})
    assert response["Location"] == "https://flaky.example/c/9"


def test_a_provider_error_is_shown_not_raised(client, payment_request, flaky):
    FlakyProvider.answers = [ProviderUnavailable("Flaky Pay timed out")]
    response = client.post(f"/pay/{payment_request.token}/checkout", {"provider": "flaky"})
    assert response.status_code == 502
    assert "Flaky Pay is not answering. Please try again in a few minutes." in response.content.decode()


def test_the_phone_form_sends_the_prompt_and_shows_the_thanks_page(client, school, promptpay):
    payment_request = PaymentRequestFactory(school=school, amount_minor=150_000, currency="KES")
    page = client.get(f"/pay/{payment_request.token}/").content.decode()
    assert '<label for="id_promptpay_phone">M-Pesa phone number:</label>' in page
    response = client.post(f"/pay/{payment_request.token}/checkout", {"provider": "promptpay", "phone": "07"})
    assert response.status_code == 400
    assert "Enter a Safaricom number such as 0712 345 678." in response.content.decode()
    assert Payment.objects.count() == 0

    response = client.post(f"/pay/{payment_request.token}/checkout", {"provider": "promptpay", "phone": "+254 712 345 678"})
    payment = Payment.objects.get()
    assert response["Location"] == f"/payments/{payment.pk}/thanks"
    thanks = client.get(response["Location"]).content.decode()
    assert "Check your phone (2547******78)" in thanks
    assert "Processing..." in thanks


# --- The thanks page and its status endpoint -----------------------------------------------------


def test_the_thanks_page_refreshes_until_the_payment_is_settled(client, payment_request, dummy_account):
    payment = start(payment_request).payment
    response = client.get(f"/payments/{payment.pk}/thanks")
    html = response.content.decode()
    assert "Processing..." in html
    # Without JavaScript: a meta refresh. With it: the status endpoint is polled.
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in html
    assert f'data-status-url="/payments/{payment.pk}/status"' in html
    assert client.get(f"/payments/{payment.pk}/status").json() == {
        "payment_id": str(payment.pk),
        "state": "processing",
        "status": "pending",
        "amount": "UGX 450,000",
        "request_status": "open",
    }

    services.payment_provider_status_apply(
        payment_id=payment.pk,
        status=NormalizedStatus(status=PaymentStatus.SUCCEEDED, amount_minor=450_000, currency="UGX"),
        source="test",
    )
    html = client.get(f"/payments/{payment.pk}/thanks").content.decode()
    assert '<p class="state paid">Paid</p>' in html
    assert "http-equiv" not in html and "fetch(" not in html
    assert client.get(f"/payments/{payment.pk}/status").json()["state"] == "paid"


def test_a_failed_payment_offers_to_try_again(client, payment_request, dummy_account):
    payment = start(payment_request).payment
    services.payment_provider_status_apply(
        payment_id=payment.pk, status=NormalizedStatus(status=PaymentStatus.FAILED), source="test"
    )
    html = client.get(f"/payments/{payment.pk}/thanks").content.decode()
    assert "<h1>Payment declined</h1>" in html
    assert '<p class="state failed">Declined</p>' in html
    assert "Thank you" not in html
    assert f'<a class="button" href="/pay/{payment_request.token}/">Try again</a>' in html
    # Trying again starts a new checkout: the failed one is not in flight.
    assert client.post(f"/pay/{payment_request.token}/checkout", {"provider": "dummy"}).status_code == 302
    assert Payment.objects.count() == 2


def test_an_unknown_payment_is_a_clear_page_and_a_json_404(client, db):
    import uuid

    missing = uuid.uuid4()
    assert client.get(f"/payments/{missing}/thanks").status_code == 404
    assert client.get(f"/payments/{missing}/status").json() == {"detail": "Unknown payment", "code": "not_found"}
    assert client.get(f"/payments/simulate/{missing}").status_code == 404


def test_the_simulate_page_is_only_for_dummy_payments(client, payment_request, flaky):
    FlakyProvider.answers = [CheckoutResult(redirect_url="https://flaky.example/c/1", checkout_id="c1")]
    payment = start(payment_request, "flaky").payment
    assert client.get(f"/payments/simulate/{payment.pk}").status_code == 404


def test_pages_load_no_outside_assets(client, payment_request, dummy_account):
    import re

    payment = start(payment_request).payment
    for url in (f"/pay/{payment_request.token}/", f"/payments/{payment.pk}/thanks", f"/payments/simulate/{payment.pk}", "/pay/nope/"):
        html = client.get(url).content.decode()
        assert '<html lang="en">' in html
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
        # The token in the URL is not sent to providers in a Referer; same-origin POSTs keep
        # their Origin header (with "no-referrer" browsers send "Origin: null" and CSRF fails).
        assert '<meta name="referrer" content="same-origin">' in html
        references = re.findall(r'(?:src|href|action)="([^"]*)"', html)
        assert references, url
        # Links to the provider's checkout are allowed (the "continue" button); assets only from
        # this service's own static files (the Content-Security-Policy allows nothing else).
        assets = re.findall(r'<(?:script|link|img|iframe)[^>]*(?:src|href)="([^"]*)"', html)
        assert assets == ["/static/payments/pay.css", "/static/payments/pay.js"], (url, assets)
        assert "@import" not in html and "url(" not in html


def test_a_student_without_a_name_is_shown_by_number(client, school, dummy_account):
    student = StudentFactory(school=school, student_number="STU-0042", full_name="")
    payment_request = PaymentRequestFactory(school=school, student=student)
    assert 'STU-0042 <span class="nowrap">(STU-0042)</span>' in client.get(f"/pay/{payment_request.token}/").content.decode()


def test_the_dummy_checkout_is_off_when_switched_off(client, settings, payment_request, dummy_account):
    """Production default: a forgotten dummy account must not let anyone "pay" without money."""
    payment = start(payment_request).payment
    settings.DUMMY_CHECKOUT_ENABLED = False
    assert 'value="dummy"' not in client.get(f"/pay/{payment_request.token}/").content.decode()
    assert client.get(f"/payments/simulate/{payment.pk}").status_code == 404
    services.payment_checkout_abandon(payment_id=payment.pk, payment_request_id=payment_request.pk, actor_type="parent")
    with pytest.raises(services.CheckoutRefused) as refused:
        start(payment_request)
    assert refused.value.code == "provider_unavailable"


def test_production_switches_the_dummy_checkout_off_by_default():
    import subprocess
    import sys

    code = "from django.conf import settings; print(settings.DUMMY_CHECKOUT_ENABLED)"
    env = {
        "APP_ENV": "production",
        "SECRET_KEY": "x" * 50,
        "FIELD_ENCRYPTION_KEYS": "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U=",
        "DATABASE_URL": "postgres://u@h/db",
        "REDIS_URL": "redis://h:6379/0",
        "SCHOOL_API_BASE_URL": "https://directory.example",
        "SCHOOL_API_TOKEN": "t",
        "METRICS_BEARER_TOKEN": "t",
        "AWS_STORAGE_BUCKET_NAME": "receipts",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run([sys.executable, "-c", "import django; django.setup(); " + code], env=env, capture_output=True, text=True, cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    assert result.stdout.strip() == "False", result.stderr


def test_a_reference_collision_draws_another(monkeypatch, payment_request, dummy_account):
    first = start(payment_request).payment
    services.payment_checkout_abandon(payment_id=first.pk, payment_request_id=payment_request.pk, actor_type="parent")
    draws = iter([first.reference, "PFRESHREF001"])
    monkeypatch.setattr(checkout, "_new_reference", lambda prefix: next(draws))
    assert start(payment_request).payment.reference == "PFRESHREF001"


@pytest.mark.django_db(transaction=True)
def test_deciding_a_checkout_takes_no_payment_lock(payment_request, dummy_account):
    """``payment_finalize`` holds a payment's lock while it takes its request's; a checkout,
    holding the request's lock, must therefore never wait for a payment's lock (that would be a
    deadlock). Here a worker holds the payment under way locked: a second click still gets its
    answer at once."""
    import threading

    from django.db import connection, transaction

    payment = start(payment_request).payment
    locked, release = threading.Event(), threading.Event()

    def worker_holding_the_payment():
        try:
            with transaction.atomic():
                Payment.objects.select_for_update().get(pk=payment.pk)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=worker_holding_the_payment)
    holder.start()
    assert locked.wait(5)
    answers = []

    def second_click():
        try:
            answers.append(start(payment_request))
        finally:
            connection.close()

    clicker = threading.Thread(target=second_click)
    clicker.start()
    clicker.join(timeout=5)
    finished = not clicker.is_alive()
    release.set()
    holder.join()
    clicker.join()
    assert finished, "the checkout waited for a payment's row lock"
    assert answers[0].reused and answers[0].payment.pk == payment.pk
