"""A bursar on a laptop (1366×768), in headless Chromium: every staff list shows the columns
that matter inside the window, without sideways scrolling and with whole amounts; a payment's
summary is on screen without scrolling. Screenshots go to ``test-artifacts/<test>/``."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.utils import timezone

from payments.models import Payment, RefundRequest, School, WebhookEvent
from quickbooks_sync.models import QboAdjustmentSync
from tests.admin.conftest import PASSWORD, make_school_staff
from tests.factories import (
    AccountFactory,
    PaymentFactory,
    PaymentRequestFactory,
    PaymentSyncFactory,
    SchoolFactory,
    StudentFactory,
)
from tests.payments import test_browser as browser

# The parents' browser fixtures: Debian's Chromium, the Content-Security-Policy watch, screenshots.
chromium = browser.chromium
no_csp_violations = browser.no_csp_violations
shots = browser.shots

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# A bursar in Kampala: the browser is in the school's zone, as Django's date widgets assume.
LAPTOP = {"viewport": {"width": 1366, "height": 768}, "timezone_id": "Africa/Kampala"}
WIDTH, HEIGHT = 1366, 768


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def busy_school(db):
    """A Kampala school's ordinary day: long names, big amounts, every provider and state."""
    school = SchoolFactory(code="ng", name="Nile Gardens School", currency="UGX")
    School.objects.filter(pk=school.pk).update(time_zone="Africa/Kampala")
    school.refresh_from_db()
    students = [
        StudentFactory(school=school, student_number=f"STU-{n:04d}", full_name=name)
        for n, name in enumerate(("Amina Nakato Ssekandi-Mukasa", "Brian Okello Ochieng", "Grace Atim Akello"), start=1)
    ]
    accounts = {slug: AccountFactory(school=school, provider=slug) for slug in ("surepay", "stripe", "mpesa", "flutterwave")}
    for index, (slug, status) in enumerate(
        [("surepay", "succeeded"), ("stripe", "succeeded"), ("mpesa", "failed"), ("flutterwave", "processing"),
         ("stripe", "partially_refunded"), ("surepay", "succeeded")]
    ):  # fmt: skip
        request = PaymentRequestFactory(
            school=school, student=students[index % 3], description="Term 1 fees and boarding, 2027",
            amount_minor=12_450_000, due_date=date(2027, 1, 15) + timedelta(days=index),
        )  # fmt: skip
        payment = PaymentFactory(
            account=accounts[slug], status=status, amount_minor=12_450_000, student=students[index % 3],
            payment_request=request, external_txn_id=f"{slug}-txn-0000000000000{index}",
            refunded_amount_minor=1_000_000 if status == "partially_refunded" else 0,
        )  # fmt: skip
        WebhookEvent.objects.create(
            account=accounts[slug], external_event_id=f"evt_1Q2w3E4r5T6y7U8i9O0p{index}", event_type="checkout.session.completed",
            raw_body="{}", status=WebhookEvent.Status.PROCESSED, payment=payment, attempts=1,
        )  # fmt: skip
        if status == "succeeded":
            PaymentSyncFactory(
                payment=payment, status="failed" if index == 5 else "synced", txn_type="" if index == 5 else "Payment",
                txn_id="" if index == 5 else str(80 + index),
                last_error="Business Validation Error: You must select a customer for this transaction. (6000)" if index == 5 else "",
            )  # fmt: skip
    PaymentFactory(
        account=accounts["surepay"], status="awaiting_review", method="bank_transfer", amount_minor=450_000,
        manual_reference="STANBIC 0042 3 March", student=students[0],
    )  # fmt: skip
    refunded = Payment.objects.get(status="partially_refunded")
    RefundRequest.objects.create(
        school=school, payment=refunded, method="provider", amount_minor=1_000_000, currency="UGX",
        reason="Paid twice for boarding", idempotency_key="refund-1", status="succeeded",
        provider_refund_id="re_3MtwBwLkdIwHu7ix28a3tqPa", requested_by_name="bursar",
    )  # fmt: skip
    sync = PaymentSyncFactory(payment=refunded, status="synced", txn_type="Payment", txn_id="99")
    QboAdjustmentSync.objects.create(
        payment=refunded, school=school, txn_date=sync.txn_date, amount_minor=1_000_000, currency="UGX",
        movement="refund:re_3MtwBwLkdIwHu7ix28a3tqPa", direction="out", status="failed",
        last_error="Stale Object Error : You and root were working on this at the same time. (5010)",
    )  # fmt: skip
    WebhookEvent.objects.create(
        account=accounts["surepay"], external_event_id=None, raw_body="{not json", status=WebhookEvent.Status.REJECTED,
        last_error="amount '12o,000' is not a plain positive number", body_sha256="a" * 64,
    )  # fmt: skip
    return school


@pytest.fixture
def bursar(busy_school):
    return make_school_staff("bursar", busy_school)


def log_in(chromium, live_server, username: str, *, sidebar_open: bool = False):
    context = chromium.new_context(**LAPTOP)
    if sidebar_open:  # as a bursar who unfolded Django's navigation sidebar
        context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'true')")
    page = context.new_page()
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.get_by_label("Username:").fill(username)
    page.get_by_label("Password:").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/admin/")
    return context, page


def assert_columns_fit(page, columns: list[str]):
    """Each named column's header and first cells lie inside the window, and nothing scrolls
    sideways; every amount is shown whole (not clipped by its cell)."""
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH, "the page scrolls sideways"
    # Django puts a wide table in a box that scrolls sideways itself: that box must not scroll
    # either, and every named column must lie inside what it shows.
    results = page.locator("#changelist .results")
    assert results.evaluate("el => el.scrollWidth <= el.clientWidth"), "the list scrolls sideways"
    pane = results.bounding_box()
    for column in columns:
        header = page.locator(f"#result_list th.column-{column}")
        assert header.count() == 1, f"no column {column}"
        cells = page.locator(f"#result_list tbody .field-{column}")
        assert cells.count() >= 1, column
        for box in [header.bounding_box()] + [cells.nth(i).bounding_box() for i in range(min(cells.count(), 5))]:
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, (column, box)
            assert pane["x"] <= box["x"] and box["x"] + box["width"] <= pane["x"] + pane["width"] + 0.5, (column, box, pane)
    clipped = page.evaluate(
        """() => [...document.querySelectorAll('#result_list .amount')]
             .filter(el => el.scrollWidth > el.clientWidth + 1 || el.getBoundingClientRect().height > 2 * parseFloat(getComputedStyle(el).lineHeight || 20))
             .map(el => el.textContent)"""
    )
    assert clipped == []


LISTS = {
    "payments": ("/admin/payments/payment/", ["date", "student_name", "amount", "status_label", "provider_name", "quickbooks", "review_link"]),
    "payment-requests": ("/admin/payments/paymentrequest/", ["created", "student_name", "description", "amount", "due", "status"]),
    "webhook-events": ("/admin/payments/webhookevent/", ["received", "provider", "event_type", "status_label", "payment_link"]),
    "payment-syncs": ("/admin/quickbooks_sync/qbopaymentsync/", ["updated", "payment_link", "amount", "status_label", "document", "error"]),
    "refund-syncs": ("/admin/quickbooks_sync/qboadjustmentsync/", ["updated", "payment_link", "money", "amount", "status_label", "document", "error"]),
    "refunds": ("/admin/payments/refundrequest/", ["created", "payment_link", "amount", "status", "how", "by"]),
    "transaction-facts": ("/admin/payments/transactionfact/", ["occurred", "kind", "status", "amount", "source", "payment_link"]),
    "provider-accounts": ("/admin/payments/provideraccount/", ["school", "provider_name", "test_mode", "active"]),
}


@pytest.mark.parametrize("sidebar", ["folded", "open"])
def test_every_staff_list_fits_a_laptop(chromium, live_server, shots, bursar, sidebar):
    """The navigation sidebar starts folded on a laptop; a bursar who opens it still sees every
    column of their school's lists."""
    context, page = log_in(chromium, live_server, "bursar", sidebar_open=sidebar == "open")
    for name, (path, columns) in LISTS.items():
        page.goto(f"{live_server.url}{path}")
        assert page.locator("#main").evaluate("el => el.classList.contains('shifted')") == (sidebar == "open")
        shots(page, name)
        assert_columns_fit(page, columns)
    # The amounts as the bursar reads them, whole.
    page.goto(f"{live_server.url}/admin/payments/paymentrequest/")
    assert page.locator("#result_list .field-amount").first.inner_text() == "UGX 12,450,000"
    assert page.locator("#result_list .field-due").first.inner_text().endswith("2027")
    context.close()


def test_staff_of_two_schools_see_which_school_and_still_fit(chromium, live_server, shots, busy_school):
    other = SchoolFactory(code="kla", name="Kampala Hill School", currency="KES")
    PaymentFactory(account=AccountFactory(school=other, provider="stripe"), status="succeeded", amount_minor=125_000_050, currency="KES")
    make_school_staff("two-schools", busy_school, other)
    context, page = log_in(chromium, live_server, "two-schools")
    page.goto(f"{live_server.url}/admin/payments/payment/")
    shots(page, "payments-two-schools")
    assert_columns_fit(page, ["date", "school_code", *LISTS["payments"][1][1:]])
    assert page.get_by_text("KES 1,250,000.50").is_visible()
    context.close()


def test_a_payments_summary_is_above_the_fold(chromium, live_server, shots, bursar, busy_school):
    payment = Payment.objects.filter(qbo_sync__status="failed").get()
    context, page = log_in(chromium, live_server, "bursar")
    page.goto(f"{live_server.url}/admin/payments/payment/{payment.pk}/change/")
    shots(page, "payment-page")
    summary = page.get_by_test_id("summary")
    box = summary.bounding_box()
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= HEIGHT, box
    for label in ("Amount", "Status", "Student", "Paid by", "How", "When", "Request", "QuickBooks"):
        assert summary.locator("dt", has_text=label).first.is_visible(), label
    assert summary.get_by_text("UGX 12,450,000").is_visible()
    assert summary.get_by_text("EAT").first.is_visible()  # the school's time
    assert summary.locator("#todo").get_by_text("QuickBooks refused it").is_visible()
    # The raw fields are folded away, and there is nothing to save.
    assert not page.get_by_text("Provider data").first.is_visible()
    assert page.locator("input[name=_save]").count() == 0
    context.close()


@pytest.mark.parametrize("what", ["webhookevent", "paymentrequest", "qbopaymentsync"])
def test_each_records_summary_is_above_the_fold(chromium, live_server, shots, bursar, what):
    context, page = log_in(chromium, live_server, "bursar")
    app = "quickbooks_sync" if what.startswith("qbo") else "payments"
    page.goto(f"{live_server.url}/admin/{app}/{what}/")
    page.locator("#result_list tbody tr th a").first.click()
    page.wait_for_load_state()
    shots(page, what)
    box = page.get_by_test_id("summary").bounding_box()
    assert box is not None and box["y"] + box["height"] <= HEIGHT, box
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    assert page.get_by_text("behind server time").count() == 0  # the browser and the page agree on the zone
    context.close()


def test_the_dashboard_names_providers_and_the_schools_day(chromium, live_server, shots, bursar, busy_school):
    Payment.objects.filter(school=busy_school, status="succeeded").update(settled_at=timezone.now())
    context, page = log_in(chromium, live_server, "bursar")
    page.goto(f"{live_server.url}/admin/dashboard/")
    shots(page, "dashboard")
    assert "(Africa/Kampala)" in page.locator("h1").inner_text()
    takings = page.locator("#takings")
    assert takings.get_by_role("link", name="Stripe").is_visible() and takings.get_by_role("link", name="SurePay").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    context.close()


def test_a_bursar_creates_a_request_picking_the_student_by_name(chromium, live_server, shots, bursar, busy_school):
    other = SchoolFactory(code="kla", name="Kampala Hill School")
    StudentFactory(school=other, student_number="KLA-0009", full_name="Amina Nakato Other")
    context, page = log_in(chromium, live_server, "bursar")
    page.goto(f"{live_server.url}/admin/payments/paymentrequest/add/")
    assert page.locator("select[name=school]").count() == 0  # one school: chosen, not asked
    page.locator(".field-student .select2-selection").click()
    page.locator(".select2-search__field").fill("Nakato")
    options = page.locator(".select2-results__option:not(.loading-results)")
    options.first.wait_for()
    assert options.all_inner_texts() == ["STU-0001 Amina Nakato Ssekandi-Mukasa"]  # never another school's
    shots(page, "student-autocomplete")
    options.first.click()
    page.get_by_label("Description:").fill("Bus fees, term 1")
    page.get_by_label("Amount:").fill("120,000")
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_url(f"{live_server.url}/admin/payments/paymentrequest/")
    created = busy_school.payment_requests.get(description="Bus fees, term 1")
    assert (created.student.student_number, created.amount_minor) == ("STU-0001", 120_000)
    context.close()


def test_staff_of_two_schools_see_only_the_chosen_schools_students(chromium, live_server, shots, busy_school):
    other = SchoolFactory(code="kla", name="Kampala Hill School")
    StudentFactory(school=other, student_number="KLA-0009", full_name="Amina Nakato Other")
    make_school_staff("two-schools", busy_school, other)
    context, page = log_in(chromium, live_server, "two-schools")
    page.goto(f"{live_server.url}/admin/payments/paymentrequest/add/")
    options = page.locator(".select2-results__option:not(.loading-results)")
    for school, expected in ((other, "KLA-0009 Amina Nakato Other"), (busy_school, "STU-0001 Amina Nakato Ssekandi-Mukasa")):
        page.get_by_label("School:").select_option(str(school.pk))
        page.locator(".field-student .select2-selection").click()
        page.locator(".select2-search__field").fill("Nakato")
        page.wait_for_function(
            "expected => [...document.querySelectorAll('.select2-results__option')].map(o => o.textContent).join('|') === expected",
            arg=expected,
        )
        assert options.all_inner_texts() == [expected]
        options.first.click()
    shots(page, "two-schools-student")
    page.get_by_label("School:").select_option(str(other.pk))  # changing the school drops the student
    assert page.locator("select[name=student]").input_value() == ""
    context.close()
