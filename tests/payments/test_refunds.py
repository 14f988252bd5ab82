"""Staff refunds through the REST API and the admin: what is refused (more than is left, a payment
not received or disputed, bad input, another school's payment), the API's exact answers, the
caller's Idempotency-Key, real concurrent requests, and refunds made by hand for providers
without a refund API (SurePay, manual payments). The providers' refund APIs end to end are in
test_refunds_providers.py."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection as db_connection
from rest_framework.test import APIClient

from core.status import PaymentStatus as S
from payments import services
from payments.api_tokens import api_token_create
from payments.ledger import FactKind, FactSource
from payments.models import AuditLog, Payment, RefundRequest, TransactionFact
from tests.factories import AccountFactory, PaymentFactory, report
from tests.payments.conftest import csrf_token, make_staff

pytestmark = pytest.mark.django_db


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user)}")
    return client


@pytest.fixture
def api(staff):
    return api_for(staff)


@pytest.fixture
def paid(account):
    """A SurePay payment of UGX 100,000 the school received (SurePay has no refund API)."""
    payment = PaymentFactory(account=account, external_txn_id="txn-123", amount_minor=100_000, currency="UGX")
    report(payment, status=S.SUCCEEDED)
    return payment


def refund_url(payment) -> str:
    return f"/api/payments/{payment.pk}/refunds"


def body_of(refund: RefundRequest) -> dict:
    refund.refresh_from_db()
    stamp = lambda value: value.isoformat().replace("+00:00", "Z") if value else None  # noqa: E731
    return {
        "id": str(refund.pk),
        "payment_id": str(refund.payment_id),
        "method": refund.method,
        "amount_minor": refund.amount_minor,
        "currency": refund.currency,
        "amount_display": refund.amount_display,
        "reason": refund.reason,
        "status": refund.status,
        "provider_refund_id": refund.provider_refund_id,
        "error": refund.error,
        "requested_by": refund.requested_by_name,
        "created_at": stamp(refund.created_at),
        "submitted_at": stamp(refund.submitted_at),
        "finished_at": stamp(refund.finished_at),
    }


# --- Refunds made by hand: providers without a refund API ----------------------------------------


def test_a_surepay_payment_is_refunded_by_hand_with_a_reason(api, paid, staff):
    response = api.post(refund_url(paid), {"amount": "40,000", "reason": "Paid twice for the bus"}, format="json")
    refund = RefundRequest.objects.get()
    assert (response.status_code, response.json()) == (201, body_of(refund))
    assert response["Location"] == f"/api/refunds/{refund.pk}/"
    assert response.json() | {"id": "", "created_at": "", "finished_at": ""} == {
        "id": "", "payment_id": str(paid.pk), "method": "manual", "amount_minor": 40_000, "currency": "UGX",
        "amount_display": "UGX 40,000", "reason": "Paid twice for the bus", "status": "succeeded",
        "provider_refund_id": "", "error": "", "requested_by": "bursar", "created_at": "", "submitted_at": None,
        "finished_at": "",
    }  # fmt: skip
    paid.refresh_from_db()
    assert (paid.status, paid.refunded_amount_minor, paid.refund_pending_amount_minor, paid.net_minor) == (
        S.PARTIALLY_REFUNDED, 40_000, 0, 60_000)
    fact = TransactionFact.objects.get(kind=FactKind.REFUND)
    assert (fact.key, fact.status, fact.amount_minor, fact.source, fact.source_ref) == (
        f"manual:{refund.pk}", "succeeded", 40_000, FactSource.STAFF, "bursar")
    assert refund.ledger_key == f"manual:{refund.pk}"
    audit = list(AuditLog.objects.order_by("id").values_list("action", "actor_type", "actor", "target_type"))
    assert audit[-3:] == [
        ("refund.requested", "staff", "bursar", "RefundRequest"),
        ("refund.succeeded", "system", "ledger", "RefundRequest"),
        ("payment.refund", "staff", "bursar", "Payment"),
    ]
    requested = AuditLog.objects.get(action="refund.requested")
    assert requested.details == {
        "payment_id": str(paid.pk), "provider": "surepay", "method": "manual", "amount_minor": 40_000,
        "currency": "UGX", "reason": "Paid twice for the bus",
    }  # fmt: skip
    # The rest, then nothing more.
    assert api.post(refund_url(paid), {"amount_minor": 60_000, "reason": "Left the school"}, format="json").status_code == 201
    paid.refresh_from_db()
    assert (paid.status, paid.refunded_amount_minor, paid.net_minor) == (S.REFUNDED, 100_000, 0)
    response = api.post(refund_url(paid), {"amount": "1", "reason": "One more"}, format="json")
    assert (response.status_code, response.json()) == (409, {
        "detail": "At most UGX 0 can be refunded (UGX 100,000 received, UGX 100,000 refunded).",
        "code": "refund_exceeds_balance",
    })  # fmt: skip
    listing = api.get(refund_url(paid))
    assert listing.status_code == 200
    assert [item["amount_minor"] for item in listing.json()] == [40_000, 60_000]


def test_a_confirmed_bank_transfer_is_refunded_by_hand(api, school, payment_request, staff):
    payment = services.manual_payment_submit(
        payment_request_id=payment_request.pk, method="bank_transfer", manual_reference="STANBIC-1", amount_minor=450_000
    )
    services.manual_payment_review(payment_id=payment.pk, decision="confirm", note="On the statement", reviewer=staff)
    response = api.post(refund_url(payment), {"amount": "450,000", "reason": "Paid at the bank twice"}, format="json")
    assert (response.status_code, response.json()["method"], response.json()["status"]) == (201, "manual", "succeeded")
    payment.refresh_from_db()
    assert (payment.status, payment.refunded_amount_minor) == (S.REFUNDED, 450_000)


# --- What is refused -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"amount": "100.5"}, {"amount": ["amount '100.5' has decimals but UGX has no minor unit"]}),
        ({"amount": "40,000", "amount_minor": 40_000}, {"amount": ["Give the amount (major units) or amount_minor, not both."]}),
        ({}, {"amount": ["This field is required."]}),
        ({"amount": "0"}, {"amount": ["Must be greater than zero."]}),
        ({"amount_minor": -5}, {"amount_minor": ["Must be greater than zero."]}),
        ({"amount_minor": "lots"}, {"amount_minor": ["A valid integer is required."]}),
        ({"amount": "abc"}, {"amount": ["amount 'abc' is not a plain positive number"]}),
        ({"amount": "1", "reason": ""}, {"reason": ["This field may not be blank."]}),
        ({"amount": "1", "reason": None}, {"reason": ["This field may not be null."]}),
        ({"amount": "1", "reason": "x" * 501}, {"reason": ["Ensure this field has no more than 500 characters."]}),
    ],
)
def test_bad_input_is_a_400_with_the_field_errors(api, paid, body, errors):
    payload = {"reason": "Overpaid", **body}
    response = api.post(refund_url(paid), payload, format="json")
    assert (response.status_code, response.json()) == (400, errors)
    assert not RefundRequest.objects.exists()


def test_a_missing_reason_is_a_400(api, paid):
    response = api.post(refund_url(paid), {"amount": "1"}, format="json")
    assert (response.status_code, response.json()) == (400, {"reason": ["This field is required."]})


def test_money_the_school_did_not_receive_cannot_be_refunded(api, account):
    pending = PaymentFactory(account=account, amount_minor=100_000)
    response = api.post(refund_url(pending), {"amount": "1", "reason": "x"}, format="json")
    assert (response.status_code, response.json()) == (409, {
        "detail": "Only money the school received can be refunded; this payment is pending.",
        "code": "payment_not_refundable",
    })  # fmt: skip
    report(pending, status=S.FAILED)
    assert api.post(refund_url(pending), {"amount": "1", "reason": "x"}, format="json").json()["detail"] == (
        "Only money the school received can be refunded; this payment is failed."
    )


def test_a_disputed_payment_cannot_be_refunded_and_a_chargeback_counts_against_what_is_left(api, paid):
    report(paid, disputes=[("dp_1", 30_000, "open")])
    response = api.post(refund_url(paid), {"amount": "1", "reason": "x"}, format="json")
    assert (response.status_code, response.json()) == (409, {
        "detail": "A dispute of this payment is open: the provider holds the money until it is decided.",
        "code": "payment_disputed",
    })  # fmt: skip
    report(paid, disputes=[("dp_1", 30_000, "lost")])
    response = api.post(refund_url(paid), {"amount": "70,001", "reason": "x"}, format="json")
    assert (response.status_code, response.json()["detail"]) == (
        409, "At most UGX 70,000 can be refunded (UGX 100,000 received, UGX 30,000 charged back).")
    assert api.post(refund_url(paid), {"amount": "70,000", "reason": "x"}, format="json").status_code == 201
    paid.refresh_from_db()
    assert (paid.refunded_amount_minor, paid.charged_back_amount_minor, paid.net_minor) == (70_000, 30_000, 0)


def test_refunds_on_their_way_count_against_what_is_left(api, paid):
    # A refund the provider reports pending (made in its dashboard) is money already on its way back.
    report(paid, refunds=[("re_dashboard", 25_000, "pending")])
    response = api.post(refund_url(paid), {"amount": "75,001", "reason": "x"}, format="json")
    assert response.json()["detail"] == (
        "At most UGX 75,000 can be refunded (UGX 100,000 received, UGX 25,000 of refunds on their way).")
    # It failed: the money is back, and can be refunded.
    report(paid, refunds=[("re_dashboard", 25_000, "failed")])
    assert api.post(refund_url(paid), {"amount": "100,000", "reason": "x"}, format="json").status_code == 201


# --- Scope: staff see and refund only their own schools' payments --------------------------------


def test_another_schools_payment_is_not_found(api, staff, other_school):
    theirs = PaymentFactory(account=AccountFactory(school=other_school, provider="surepay"), amount_minor=5_000)
    report(theirs, status=S.SUCCEEDED)
    for response in (
        api.post(refund_url(theirs), {"amount": "1", "reason": "x"}, format="json"),
        api.get(refund_url(theirs)),
        api.post(f"/api/payments/{uuid.uuid4()}/refunds", {"amount": "1", "reason": "x"}, format="json"),
    ):
        assert (response.status_code, response.json()) == (404, {"detail": "No such payment.", "code": "not_found"})
    their_staff = make_staff("kla-bursar", other_school)
    refund = services.refund_request_create(payment_id=theirs.pk, amount="1,000", reason="x", actor=their_staff).refund_request
    assert api.get(f"/api/refunds/{refund.pk}/").status_code == 404
    assert api_for(their_staff).get(f"/api/refunds/{refund.pk}/").json() == body_of(refund)
    assert not RefundRequest.objects.exclude(pk=refund.pk).exists()
    # The service checks the school again, behind the API's scoping.
    with pytest.raises(services.RefundRefused, match="not staff of this payment's school"):
        services.refund_request_create(payment_id=theirs.pk, amount="1", reason="x", actor=staff)


def test_no_token_no_refund(paid):
    assert APIClient().post(refund_url(paid), {"amount": "1", "reason": "x"}, format="json").status_code == 401


# --- The caller's Idempotency-Key -----------------------------------------------------------------


def test_the_same_idempotency_key_answers_the_first_refund(api, paid):
    payload = {"amount": "30,000", "reason": "Overpaid"}
    first = api.post(refund_url(paid), payload, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api.post(refund_url(paid), payload, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    refund = RefundRequest.objects.get()
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json() == body_of(refund)
    assert TransactionFact.objects.filter(kind=FactKind.REFUND).count() == 1
    paid.refresh_from_db()
    assert paid.refunded_amount_minor == 30_000
    other = api.post(refund_url(paid), {"amount": "10,000", "reason": "Overpaid"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert (other.status_code, other.json()) == (409, {
        "detail": "This Idempotency-Key was already used for another refund of this payment.",
        "code": "idempotency_key_reused",
        "refund": body_of(refund),
    })  # fmt: skip
    # Another key is another refund.
    assert api.post(refund_url(paid), payload, format="json", HTTP_IDEMPOTENCY_KEY="k-2").status_code == 201
    assert RefundRequest.objects.count() == 2


# --- Real concurrent requests ----------------------------------------------------------------------


def _concurrently(calls) -> list:
    """Run each call in its own thread, with its own database connection, all released at once."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait()
            results[index] = call()
        finally:
            db_connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


@pytest.mark.django_db(transaction=True)
def test_two_refunds_at_once_never_exceed_what_was_received(school, account, staff):
    payment = PaymentFactory(account=account, external_txn_id="txn-c", amount_minor=100_000, currency="UGX")
    report(payment, status=S.SUCCEEDED)
    clients = [api_for(staff), api_for(staff)]
    calls = [
        (lambda c=c: c.post(refund_url(payment), {"amount": "60,000", "reason": "x"}, format="json"))
        for c in clients
    ]
    responses = _concurrently(calls)
    assert sorted(response.status_code for response in responses) == [201, 409]
    refused = next(response for response in responses if response.status_code == 409)
    assert refused.json() == {
        "detail": "At most UGX 40,000 can be refunded (UGX 100,000 received, UGX 60,000 refunded).",
        "code": "refund_exceeds_balance",
    }
    payment.refresh_from_db()
    assert (payment.refunded_amount_minor, RefundRequest.objects.count()) == (60_000, 1)


@pytest.mark.django_db(transaction=True)
def test_the_same_idempotency_key_at_once_makes_one_refund(school, account, staff):
    payment = PaymentFactory(account=account, external_txn_id="txn-k", amount_minor=100_000, currency="UGX")
    report(payment, status=S.SUCCEEDED)
    calls = [
        (lambda c=api_for(staff): c.post(refund_url(payment), {"amount": "10,000", "reason": "x"}, format="json",
                                         HTTP_IDEMPOTENCY_KEY="same"))
        for _ in range(3)
    ]  # fmt: skip
    responses = _concurrently(calls)
    assert sorted(response.status_code for response in responses) == [200, 200, 201]
    assert len({response.json()["id"] for response in responses}) == 1
    payment.refresh_from_db()
    assert (payment.refunded_amount_minor, RefundRequest.objects.count()) == (10_000, 1)


# --- The admin: the payment's "Refund" page -------------------------------------------------------


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def test_the_refund_page_refunds_once_even_when_submitted_twice(staff_client, paid):
    change = staff_client.get(f"/admin/payments/payment/{paid.pk}/change/").content.decode()
    assert f'href="/admin/payments/payment/{paid.pk}/refund/"' in change
    url = f"/admin/payments/payment/{paid.pk}/refund/"
    page = staff_client.get(url).content.decode()
    assert '<strong id="refund-left">UGX 100,000</strong>' in page
    assert "surepay has no refund API here: give the money back yourself" in page
    assert 'value="Record the refund made by hand"' in page
    form_key = page.split('name="form_key" value="')[1].split('"')[0]
    post = {"csrfmiddlewaretoken": csrf_token(page), "amount": "25,000", "reason": "Sibling discount", "form_key": form_key}
    response = staff_client.post(url, post, follow=True)
    assert response.redirect_chain == [(f"/admin/payments/payment/{paid.pk}/change/", 302)]
    assert [str(m) for m in response.context["messages"]] == ["Refund of UGX 25,000 recorded as made by hand."]
    # The browser sends the same form again (a reload): the same refund, not a second one.
    again = staff_client.post(url, post, follow=True)
    assert [str(m) for m in again.context["messages"]] == ["This refund of UGX 25,000 was already recorded (succeeded)."]
    assert RefundRequest.objects.count() == 1
    paid.refresh_from_db()
    assert paid.refunded_amount_minor == 25_000
    change = staff_client.get(f"/admin/payments/payment/{paid.pk}/change/").content.decode()
    assert 'id="refunds"' in change and "Sibling discount" in change


def test_the_refund_page_explains_a_refusal(staff_client, paid):
    url = f"/admin/payments/payment/{paid.pk}/refund/"
    page = staff_client.get(url).content.decode()
    post = {"csrfmiddlewaretoken": csrf_token(page), "amount": "100,001", "reason": "x", "form_key": "k"}
    response = staff_client.post(url, post)
    assert response.status_code == 400
    assert "At most UGX 100,000 can be refunded (UGX 100,000 received)." in response.content.decode()
    response = staff_client.post(url, {**post, "amount": "1.5"})
    assert "amount &#x27;1.5&#x27; has decimals but UGX has no minor unit" in response.content.decode()
    assert not RefundRequest.objects.exists()


def test_the_refund_page_of_another_schools_payment_is_not_found(staff_client, other_school):
    theirs = PaymentFactory(account=AccountFactory(school=other_school, provider="surepay"), amount_minor=5_000)
    report(theirs, status=S.SUCCEEDED)
    assert staff_client.get(f"/admin/payments/payment/{theirs.pk}/refund/").status_code == 404
    assert staff_client.post(f"/admin/payments/payment/{theirs.pk}/refund/", {"amount": "1", "reason": "x"}).status_code == 404
    assert not RefundRequest.objects.exists()


def test_a_pending_payment_has_no_refund_button(staff_client, account):
    pending = PaymentFactory(account=account, amount_minor=5_000)
    assert "/refund/" not in staff_client.get(f"/admin/payments/payment/{pending.pk}/change/").content.decode()


def test_refunds_are_listed_read_only_for_their_school(staff_client, paid, staff, other_school):
    services.refund_request_create(payment_id=paid.pk, amount="1,000", reason="Mine", actor=staff)
    theirs = PaymentFactory(account=AccountFactory(school=other_school, provider="surepay"), amount_minor=5_000)
    report(theirs, status=S.SUCCEEDED)
    services.refund_request_create(payment_id=theirs.pk, amount="1,000", reason="Theirs", actor=make_staff("kla", other_school))
    listing = staff_client.get("/admin/payments/refundrequest/").content.decode()
    assert "UGX 1,000" in listing and listing.count('class="field-amount"') == 1  # one row: ours
    theirs_refund = RefundRequest.objects.get(reason="Theirs")
    assert staff_client.get(f"/admin/payments/refundrequest/{theirs_refund.pk}/change/").status_code == 302  # "not found"
    assert staff_client.get("/admin/payments/refundrequest/add/").status_code == 403


def test_payment_api_shows_refunded_and_pending_amounts(api, paid):
    report(paid, refunds=[("re_1", 10_000, "pending"), ("re_2", 5_000)])
    detail = api.get(f"/api/payments/{paid.pk}/").json()
    assert (detail["status"], detail["refunded_amount_minor"], detail["refund_pending_amount_minor"]) == (
        "partially_refunded", 5_000, 10_000)
    assert Payment.objects.get().refund_pending_amount_minor == 10_000


def test_the_readme_example_refunds_a_dummy_payment_by_hand(api, payment_request, dummy_account):
    """docs/parents.md: pay with the dummy provider, then give part of it back through the API."""
    payment = services.payment_checkout_start(payment_request_id=payment_request.pk, provider="dummy").payment
    services.dummy_payment_simulate(payment_id=payment.pk, outcome="succeeded")
    services.payment_status_recheck(payment_id=payment.pk)  # the dummy "provider" confirms it
    response = api.post(refund_url(payment), {"amount": "20,000", "reason": "Bus route cancelled"}, format="json",
                        HTTP_IDEMPOTENCY_KEY="bus-2-refund")  # fmt: skip
    assert (response.status_code, response.json()["method"], response.json()["status"]) == (201, "manual", "succeeded")
    payment.refresh_from_db()
    assert (payment.status, payment.refunded_amount_minor) == (S.PARTIALLY_REFUNDED, 20_000)
