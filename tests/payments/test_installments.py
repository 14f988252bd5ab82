"""Installments: a request the school lets parents pay in parts. Each part counts toward the
request up to its balance; the part that reaches the amount pays it; more than the balance is
kept and flagged; two parts confirmed at once never over-collect silently."""

import re
import threading

import pytest
from django.db import connection

from core.status import PaymentStatus
from payments import selectors, services
from payments.models import Payment, PaymentRequest, ReviewFlag
from payments.services import payment_provider_status_apply
from providers.base import NormalizedStatus
from tests.payments.test_checkout_concurrency import race
from tests.payments.test_finalize import dummy_webhook, intent

pytestmark = pytest.mark.django_db


@pytest.fixture
def in_parts(payment_request):
    school = payment_request.school
    school.installments_allowed = True
    school.installment_min_minor = 50_000
    school.save()
    return payment_request


def settle(payment, amount_minor):
    return payment_provider_status_apply(
        payment_id=payment.pk,
        status=NormalizedStatus(status=PaymentStatus.SUCCEEDED, amount_minor=amount_minor, currency="UGX"),
        source="test",
    )


def test_two_parts_pay_the_request_and_each_counts_once(client, in_parts, dummy_account):
    first = intent(in_parts, dummy_account, amount_minor=200_000)
    dummy_webhook(client, first)
    in_parts.refresh_from_db()
    first.refresh_from_db()
    assert (in_parts.status, first.applied_minor, first.review_flag) == ("open", 200_000, "")
    dummy_webhook(client, first, event_id="devt-again")  # a redelivery counts nothing more
    assert selectors.request_installments(payment_request=in_parts).paid_minor == 200_000

    second = intent(in_parts, dummy_account, amount_minor=250_000)
    dummy_webhook(client, second)
    in_parts.refresh_from_db()
    second.refresh_from_db()
    assert (in_parts.status, in_parts.paid_payment_id, second.applied_minor) == ("paid", second.pk, 250_000)
    assert second.review_flag == ""


def test_a_part_above_the_balance_pays_the_request_and_the_rest_is_flagged(in_parts, dummy_account):
    settle(intent(in_parts, dummy_account, amount_minor=300_000), 300_000)
    last = intent(in_parts, dummy_account, amount_minor=200_000)
    change = settle(last, 200_000)
    assert change.note.endswith("request not settled: overpayment")
    last.refresh_from_db()
    in_parts.refresh_from_db()
    assert in_parts.status == "paid" and in_parts.paid_payment_id == last.pk
    assert (last.applied_minor, last.review_flag) == (150_000, ReviewFlag.OVERPAYMENT)
    assert last.review_flag_reason == "UGX 200,000 received, UGX 150,000 was due: UGX 50,000 over"


def test_without_installments_a_part_is_flagged_as_before(payment_request, dummy_account):
    part = intent(payment_request, dummy_account, amount_minor=200_000)
    settle(part, 200_000)
    part.refresh_from_db()
    payment_request.refresh_from_db()
    assert (payment_request.status, part.applied_minor, part.review_flag) == ("open", 0, ReviewFlag.AMOUNT_MISMATCH)


def test_a_request_can_refuse_parts_its_school_allows(in_parts, dummy_account):
    in_parts.installments_allowed = False
    in_parts.save()
    with pytest.raises(services.CheckoutRefused) as refused:
        services.payment_checkout_start(payment_request_id=in_parts.pk, provider="dummy", amount_minor=100_000)
    assert (refused.value.code, refused.value.detail) == (
        "amount_invalid",
        "This school takes this fee in one payment of UGX 450,000.",
    )


@pytest.mark.parametrize(
    ("amount_minor", "detail"),
    [
        (450_001, "That is more than is due. Pay at most UGX 450,000."),
        (49_999, "Pay at least UGX 50,000 at a time."),
    ],
)
def test_checkout_keeps_a_part_between_the_minimum_and_the_balance(in_parts, dummy_account, amount_minor, detail):
    with pytest.raises(services.CheckoutRefused) as refused:
        services.payment_checkout_start(payment_request_id=in_parts.pk, provider="dummy", amount_minor=amount_minor)
    assert (refused.value.code, refused.value.detail) == ("amount_invalid", detail)
    assert Payment.objects.count() == 0


def test_less_than_the_minimum_is_fine_when_it_is_all_that_is_left(in_parts, dummy_account):
    settle(intent(in_parts, dummy_account, amount_minor=420_000), 420_000)
    started = services.payment_checkout_start(payment_request_id=in_parts.pk, provider="dummy", amount_minor=30_000)
    assert started.payment.amount_minor == 30_000
    with pytest.raises(services.CheckoutRefused):
        services.payment_checkout_start(payment_request_id=in_parts.pk, provider="dummy", amount_minor=20_000)


def test_the_pay_page_shows_paid_so_far_and_lets_the_parent_choose(client, in_parts, dummy_account):
    settle(intent(in_parts, dummy_account, amount_minor=200_000), 200_000)
    html = client.get(f"/pay/{in_parts.token}/").content.decode()
    assert '<p class="amount" data-testid="amount">UGX 250,000</p>' in html
    assert '<dd data-testid="paid-so-far">UGX 200,000</dd>' in html
    assert "You may pay in parts of at least UGX 50,000." in html
    assert 'name="provider"' not in html  # the amount first
    html = client.get(f"/pay/{in_parts.token}/?amount=120,000").content.decode()
    assert ">Pay UGX 120,000 with Dummy (development)</button>" in html
    assert '<input type="hidden" name="amount" value="120000">' in html
    response = client.post(f"/pay/{in_parts.token}/checkout", {"provider": "dummy", "amount": "120000"})
    assert response.status_code == 302
    assert Payment.objects.get(status=PaymentStatus.PENDING).amount_minor == 120_000


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("300,000", "That is more than is due. Pay at most UGX 250,000."),
        ("10,000", "Pay at least UGX 50,000 at a time."),
        ("12o,000", "Write the amount in figures only, for example 120,000."),
    ],
)
def test_a_refused_amount_is_listed_at_the_top(client, in_parts, dummy_account, amount, message):
    settle(intent(in_parts, dummy_account, amount_minor=200_000), 200_000)
    response = client.post(f"/pay/{in_parts.token}/checkout", {"provider": "dummy", "amount": amount})
    assert response.status_code == 400
    html = response.content.decode()
    summary = re.search(r'<div class="error-summary" id="error-summary".*?</div>', html, re.S).group(0)
    assert f'<li><a href="#id_amount">{message}</a></li>' in summary
    assert Payment.objects.filter(status=PaymentStatus.PENDING).count() == 0
    # The same amount typed in the "Continue" step (a GET) is refused the same way.
    response = client.get(f"/pay/{in_parts.token}/", {"amount": amount})
    assert response.status_code == 400
    assert f'<li><a href="#id_amount">{message}</a></li>' in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_two_parts_confirmed_at_once_never_over_collect_silently(in_parts, dummy_account):
    """Two workers confirm two parts of 300,000 on a 450,000 request at the same moment: the
    request's row lock orders them, so 450,000 is counted and the 150,000 extra is flagged."""
    parts = [intent(in_parts, dummy_account, amount_minor=300_000) for _ in range(2)]
    barrier = threading.Barrier(2)
    notes = {}

    def confirm(payment):
        try:
            barrier.wait()
            notes[payment.pk] = settle(payment, 300_000).note.split("; ", 1)[1]
        finally:
            connection.close()

    threads = [threading.Thread(target=confirm, args=(part,)) for part in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(notes.values()) == ["part of the request paid", "request not settled: overpayment"]
    in_parts.refresh_from_db()
    assert in_parts.status == PaymentRequest.Status.PAID
    assert sorted(Payment.objects.values_list("applied_minor", "review_flag")) == [(150_000, "overpayment"), (300_000, "")]


@pytest.mark.django_db(transaction=True)
def test_two_tabs_choosing_different_parts_start_one_payment(live_server, in_parts, dummy_account, settings):
    """Two tabs post different parts at the same moment, over real sockets: one checkout
    starts; the other is told a payment is already under way, so the two cannot add up past
    the balance unseen."""
    settings.PUBLIC_BASE_URL = live_server.url
    url = f"{live_server.url}/pay/{in_parts.token}/"

    def make_request(index, client):
        page = client.get(url)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        data = {"csrfmiddlewaretoken": token, "provider": "dummy", "amount": ["300000", "400000"][index]}
        return lambda: client.post(url + "checkout", data=data, headers={"Referer": url})

    responses = race(2, make_request)
    assert sorted(response.status_code for response in responses) == [302, 409]
    refused = next(response for response in responses if response.status_code == 409)
    assert "is already under way." in refused.text
    assert Payment.objects.count() == 1


def test_staff_let_one_request_be_paid_in_parts(client, payment_request, staff, dummy_account):
    client.force_login(staff)
    url = f"/admin/payments/paymentrequest/{payment_request.pk}/change/"
    response = client.post(
        url,
        {"description": payment_request.description, "installments_allowed": "true", "installment_min_minor": "100000",
         "parent_email": "", "parent_phone": "", "payments-TOTAL_FORMS": "0", "payments-INITIAL_FORMS": "0",
         "notices-TOTAL_FORMS": "0", "notices-INITIAL_FORMS": "0"},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[-2000:]
    payment_request.refresh_from_db()
    assert (payment_request.installments_allowed, payment_request.installment_min_minor) == (True, 100_000)
    html = client.get(f"/pay/{payment_request.token}/").content.decode()
    assert "You may pay in parts of at least UGX 100,000." in html
