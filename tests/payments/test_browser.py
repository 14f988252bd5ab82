"""A parent on a phone, in headless Chromium (Debian's package) driven by Playwright: pays a pay
link with the dummy provider and sees "Paid" (with and without JavaScript); reports a bank
transfer with a receipt, which staff confirm in admin, marking the request paid.

Screenshots at phone width are saved under ``test-artifacts/<test>/`` (git-ignored)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.status import PaymentStatus
from payments.models import Payment, PaymentRequest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium (.ci/run does)")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop here
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield browser
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture(autouse=True)
def no_csp_violations(chromium, monkeypatch):
    """Every page of every browser test runs under the service's Content-Security-Policy: a
    script, style or image it refuses (an inline one) is a console error, and fails the test."""
    refused: list[str] = []
    new_context = chromium.new_context

    def watched_context(*args, **kwargs):
        context = new_context(*args, **kwargs)
        context.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None)
        return context

    monkeypatch.setattr(chromium, "new_context", watched_context)
    yield
    assert refused == []


@pytest.fixture
def shots(request):
    folder = ARTIFACTS / request.node.name
    folder.mkdir(parents=True, exist_ok=True)

    def shot(page, name):
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

    return shot


@pytest.fixture
def site(live_server, settings, celery_worker):
    settings.PUBLIC_BASE_URL = live_server.url
    return live_server.url


@pytest.fixture
def outside_requests():
    """Every request a page makes to anywhere but this service."""
    return []


def open_phone(chromium, site, outside_requests, **options):
    context = chromium.new_context(**PHONE, **options)
    context.on("request", lambda req: None if req.url.startswith(site) else outside_requests.append(req.url))
    return context, context.new_page()


def relative_luminance(rgb: tuple[int, int, int]) -> float:
    def channel(c):
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(page, selector: str) -> float:
    colors = page.eval_on_selector(
        selector,
        """el => { const s = getComputedStyle(el); let bg = s.backgroundColor, e = el;
                   while (bg === 'rgba(0, 0, 0, 0)' && e.parentElement) { e = e.parentElement; bg = getComputedStyle(e).backgroundColor; }
                   return [s.color, bg]; }""",
    )
    fg, bg = (tuple(int(x) for x in c[c.index("(") + 1 : c.index(")")].split(",")[:3]) for c in colors)
    light, dark = sorted((relative_luminance(fg), relative_luminance(bg)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def assert_accessible(page):
    """Every visible form control has a label, and text and buttons meet WCAG AA contrast."""
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
             .filter(el => el.type !== 'hidden' && !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
             .map(el => el.name)"""
    )
    assert unlabelled == []
    assert page.evaluate("document.documentElement.lang") == "en"
    for selector in ("h1", "main p", "button"):
        if page.locator(selector).count():
            assert contrast(page, selector) >= 4.5, selector


def tab_to(page, name: str, limit: int = 40):
    """Reach a control with the Tab key alone, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.textContent.trim()") == name:
            return
    raise AssertionError(f"{name!r} cannot be reached with the keyboard")


def test_a_parent_pays_with_the_dummy_provider_and_sees_paid(chromium, site, shots, payment_request, dummy_account, outside_requests):
    context, page = open_phone(chromium, site, outside_requests)
    page.goto(f"{site}/pay/{payment_request.token}/")
    assert page.get_by_test_id("amount").inner_text() == "UGX 450,000"
    assert page.get_by_text("Amina Nakato (STU-0001)").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling on a phone
    assert_accessible(page)
    shots(page, "1-pay-link")

    tab_to(page, "Pay with Dummy (development)")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{site}/payments/simulate/**")
    assert_accessible(page)
    shots(page, "2-dummy-provider")
    page.get_by_role("button", name="Pay", exact=True).click()

    page.wait_for_url(f"{site}/payments/*/thanks")
    # "Processing..." until the worker applies the webhook, then the page turns to "Paid".
    page.locator(".state.paid").wait_for(timeout=20_000)
    assert page.locator(".state").inner_text() == "Paid"
    assert_accessible(page)
    shots(page, "3-thanks-paid")
    context.close()

    payment = Payment.objects.get()
    payment_request.refresh_from_db()
    assert (payment.status, payment_request.status, payment_request.paid_payment_id) == (
        PaymentStatus.SUCCEEDED,
        PaymentRequest.Status.PAID,
        payment.pk,
    )
    assert outside_requests == []


def test_without_javascript_the_thanks_page_still_turns_to_paid(chromium, site, shots, payment_request, dummy_account, outside_requests):
    context, page = open_phone(chromium, site, outside_requests, java_script_enabled=False)
    page.goto(f"{site}/pay/{payment_request.token}/")
    page.get_by_role("button", name="Pay with Dummy (development)").click()
    page.get_by_role("button", name="Pay", exact=True).click()
    page.wait_for_url(f"{site}/payments/*/thanks")
    page.locator(".state.paid").wait_for(timeout=20_000)  # reached by the meta refresh alone
    shots(page, "thanks-paid-no-js")
    context.close()
    assert outside_requests == []


def test_a_manual_proof_reaches_staff_whose_confirmation_marks_the_request_paid(
    chromium, site, shots, payment_request, staff, tmp_path, outside_requests
):
    receipt = tmp_path / "receipt.png"
    receipt.write_bytes(PNG)
    staff.set_password("correct horse battery")
    staff.save()

    context, page = open_phone(chromium, site, outside_requests)
    page.goto(f"{site}/pay/{payment_request.token}/")
    page.get_by_label("Bank transfer").check()
    assert page.get_by_label("Amount paid (UGX):").input_value() == "450,000"
    page.get_by_label("Reference:").fill("STANBIC-7781")
    page.get_by_label("Receipt (optional):").set_input_files(str(receipt))
    shots(page, "1-report-bank-transfer")
    page.get_by_role("button", name="Send to the school").click()
    page.wait_for_url(f"{site}/payments/*/thanks")
    assert page.locator(".state").inner_text() == "Waiting for the school"
    shots(page, "2-waiting-for-the-school")
    payment = Payment.objects.get()
    assert (payment.status, payment.manual_reference, payment.receipt_content_type) == (
        PaymentStatus.AWAITING_REVIEW,
        "STANBIC-7781",
        "image/png",
    )

    staff_context = chromium.new_context(**PHONE)
    admin = staff_context.new_page()
    admin.goto(f"{site}/admin/login/?next=/admin/payments/payment/%3Fstatus__exact%3Dawaiting_review")
    admin.get_by_label("Username:").fill("bursar")
    admin.get_by_label("Password:").fill("correct horse battery")
    admin.get_by_role("button", name="Log in").click()
    admin.get_by_role("link", name="Review", exact=True).click()
    assert admin.get_by_text("STANBIC-7781").is_visible()
    receipt_image = admin.locator("img[alt='Receipt uploaded by the parent']")
    # The page's load event may come before the image's bytes: wait until it has loaded.
    receipt_image.evaluate("img => img.complete || new Promise(done => img.addEventListener('load', done))")
    assert receipt_image.evaluate("img => img.naturalWidth") == 1
    admin.get_by_label("Confirm: the money arrived").check()
    admin.get_by_label("Note:").fill("Seen on the Stanbic statement of 3 March")
    shots(admin, "3-staff-review")
    admin.get_by_role("button", name="Record the review").click()
    admin.wait_for_url(f"{site}/admin/payments/payment/{payment.pk}/change/")
    assert admin.locator("ul.messagelist").inner_text() == "Payment confirmed. The payment request is now paid."
    shots(admin, "4-staff-confirmed")
    staff_context.close()

    page.goto(f"{site}/pay/{payment_request.token}/")
    assert page.get_by_role("heading", level=1).inner_text() == "Already paid"
    shots(page, "5-link-already-paid")
    context.close()

    payment.refresh_from_db()
    payment_request.refresh_from_db()
    assert (payment.status, payment.reviewed_by, payment.review_note) == (
        PaymentStatus.SUCCEEDED,
        staff,
        "Seen on the Stanbic statement of 3 March",
    )
    assert (payment_request.status, payment_request.paid_payment_id) == (PaymentRequest.Status.PAID, payment.pk)
    assert outside_requests == []


def test_the_api_docs_page_renders_from_this_services_own_files(chromium, live_server, outside_requests):
    context = chromium.new_context()
    context.on("request", lambda req: None if req.url.startswith(live_server.url) else outside_requests.append(req.url))
    page = context.new_page()
    page.goto(f"{live_server.url}/api/docs/")
    page.locator(".swagger-ui .info .title").wait_for(timeout=15_000)
    assert page.locator(".swagger-ui .info .title").inner_text().startswith("school-payments API")
    assert page.get_by_text("/api/payment-requests/{id}/checkout").first.is_visible()
    context.close()
    assert outside_requests == []


def test_the_admin_pages_work_under_the_content_security_policy(chromium, site, shots, payment_request, staff, outside_requests):
    """The admin's own scripts and ours are files; a refused inline script or style would show as a
    console error (see no_csp_violations)."""
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("root", "root@example.org", "correct horse battery")
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.on("request", lambda req: None if req.url.startswith(site) else outside_requests.append(req.url))
    page = context.new_page()
    page.goto(f"{site}/admin/login/?next=/admin/")
    page.get_by_label("Username:").fill("root")
    page.get_by_label("Password:").fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{site}/admin/")
    from tests.factories import AccountFactory, PaymentFactory, report

    received = PaymentFactory(account=AccountFactory(school=payment_request.school, provider="surepay"), amount_minor=100_000)
    report(received, status=PaymentStatus.SUCCEEDED)
    for path in ("/admin/dashboard/", "/admin/payments/paymentrequest/", f"/admin/payments/paymentrequest/{payment_request.pk}/change/",
                 "/admin/quickbooks_sync/qboconnection/", "/admin/payments/payment/?status__exact=succeeded",
                 f"/admin/payments/payment/{received.pk}/refund/", "/admin/payments/refundrequest/"):
        page.goto(f"{site}{path}")
        assert page.locator("#content").is_visible()
    # A refund made by hand, through the payment's Refund page.
    page.goto(f"{site}/admin/payments/payment/{received.pk}/refund/")
    page.get_by_label("Amount to refund (UGX):").fill("30,000")
    page.get_by_label("Reason:").fill("Sibling discount")
    shots(page, "admin-refund-page")
    page.get_by_role("button", name="Record the refund made by hand").click()
    page.wait_for_url(f"{site}/admin/payments/payment/{received.pk}/change/")
    assert page.locator("ul.messagelist").inner_text() == "Refund of UGX 30,000 recorded as made by hand."
    assert page.locator("#refunds").is_visible()
    # The admin's own JavaScript runs (the action bar's "select all" checkbox).
    page.goto(f"{site}/admin/payments/paymentrequest/")
    page.locator("#action-toggle").check()
    assert page.locator("input.action-select").first.is_checked()
    shots(page, "admin-under-csp")
    context.close()
    assert outside_requests == []


def test_a_parent_gives_an_email_for_paystack_at_phone_width(chromium, site, shots, school, student, settings, outside_requests):
    """Paystack's checkout needs the payer's email: the pay page asks for it (staff gave none),
    refuses one Paystack could not use with a clear message, then sends the parent to Paystack."""
    from providers.paystack.fake import FakePaystack
    from tests.factories import AccountFactory, PaymentRequestFactory
    from tests.providers.helpers import fake_server

    key = "sk_test_browser0paystack"
    school.currency = "NGN"
    school.save()
    AccountFactory(school=school, provider="paystack", webhook_secret=key, api_key=key, test_mode=True)
    payment_request = PaymentRequestFactory(school=school, student=student, amount_minor=2_500_000, currency="NGN")
    with fake_server(FakePaystack(secret_key=key), settings, "PAYSTACK_API_BASE_URL") as paystack:
        context, page = open_phone(chromium, site, outside_requests)
        # Paystack's hosted page is outside this service: the browser is shown a stand-in there.
        page.route("https://checkout.paystack.test/**", lambda route: route.fulfill(
            status=200, content_type="text/html", body="<html lang='en'><title>Paystack</title><h1>Paystack checkout</h1></html>"))
        page.goto(f"{site}/pay/{payment_request.token}/")
        assert page.get_by_test_id("amount").inner_text() == "NGN 25,000.00"
        email = page.get_by_label("Your email address:")
        assert email.get_attribute("type") == "email" and email.get_attribute("autocomplete") == "email"
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert_accessible(page)
        shots(page, "1-pay-link-asks-for-email")

        # The browser accepts "ada@example", Paystack would not: the server says why, beside the field.
        email.fill("ada@example")
        page.get_by_role("button", name="Pay with Paystack").click()
        page.wait_for_load_state()
        error = page.locator("#id_paystack_email_error")
        assert error.inner_text() == "'ada@example' is not an email address (for example name@example.com)."
        assert page.get_by_label("Your email address:").get_attribute("aria-invalid") == "true"
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert_accessible(page)
        shots(page, "2-email-refused")
        assert not paystack.requests

        page.get_by_label("Your email address:").fill("ada.obi@example.com")
        page.get_by_role("button", name="Pay with Paystack").click()
        page.wait_for_url("https://checkout.paystack.test/**")
        shots(page, "3-sent-to-paystack")
        context.close()
        sent = paystack.requests[-1].json()
        assert (sent["email"], sent["amount"], sent["currency"]) == ("ada.obi@example.com", 2_500_000, "NGN")
    payment = Payment.objects.get()
    assert (payment.provider, payment.payer, payment.status) == ("paystack", {"email": "ada.obi@example.com"}, PaymentStatus.PENDING)
    # Nothing left this service but the parent's visit to Paystack's page (and its icon).
    assert {url.split("/")[2] for url in outside_requests} == {"checkout.paystack.test"}
    assert outside_requests[0].startswith("https://checkout.paystack.test/ac_")
