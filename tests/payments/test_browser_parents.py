"""A parent in headless Chromium, on a phone (390×844) and on a laptop (1366×768): pays in
parts, is shown a refused amount at the top with the focus on it, reads the page in French,
sees the test-mode banner, waits for the school after a report, and reads a declined payment
as declined. Screenshots under ``test-artifacts/<test>/`` (git-ignored)."""

from __future__ import annotations

import pytest

from core.status import PaymentStatus
from payments.models import Payment, PaymentRequest
from tests.factories import AccountFactory
from tests.payments.test_browser import (  # noqa: F401 - fixtures
    PHONE,
    assert_accessible,
    chromium,
    no_csp_violations,
    outside_requests,
    shots,
    site,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LAPTOP = {"viewport": {"width": 1366, "height": 768}}
VIEWPORTS = {"phone": PHONE, "laptop": LAPTOP}


@pytest.fixture(params=sorted(VIEWPORTS))
def browse(request, chromium, site, outside_requests):  # noqa: F811
    """A page at one viewport that records every request leaving this service."""
    context = chromium.new_context(**VIEWPORTS[request.param])
    context.on("request", lambda req: None if req.url.startswith(site) else outside_requests.append(req.url))
    page = context.new_page()
    page.viewport_name = request.param
    yield page
    context.close()
    assert outside_requests == []


def inside_viewport(page, selector: str) -> bool:
    box = page.locator(selector).first.bounding_box()
    width = page.viewport_size["width"]
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width


@pytest.fixture
def in_parts(payment_request):
    school = payment_request.school
    school.installments_allowed, school.installment_min_minor = True, 50_000
    school.save()
    return payment_request


def test_a_parent_pays_in_two_parts(browse, site, shots, in_parts, dummy_account):  # noqa: F811
    page = browse
    page.goto(f"{site}/pay/{in_parts.token}/")
    assert page.get_by_text("You may pay in parts of at least UGX 50,000.").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
    page.get_by_label("Amount to pay now (UGX)").fill("12o,000")
    page.get_by_role("button", name="Continue").click()
    # The refusal is at the top, in plain words, and the focus is on it.
    summary = page.get_by_test_id("error-summary")
    assert summary.is_visible() and inside_viewport(page, "#error-summary")
    assert "Write the amount in figures only, for example 120,000." in summary.inner_text()
    assert page.evaluate("document.activeElement.id") == "error-summary"
    shots(page, f"1-refused-amount-{page.viewport_name}")

    page.get_by_label("Amount to pay now (UGX)").fill("200,000")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Pay UGX 200,000 with Dummy (development)").click()
    page.wait_for_url(f"{site}/payments/simulate/**")
    page.get_by_role("button", name="Pay", exact=True).click()
    page.wait_for_url(f"{site}/payments/*/thanks")
    page.locator(".state.paid").wait_for(timeout=20_000)
    assert page.get_by_test_id("balance").inner_text() == (
        "Still due on this fee: UGX 250,000. You can pay it from the same link."
    )
    assert_accessible(page)
    shots(page, f"2-first-part-paid-{page.viewport_name}")

    page.goto(f"{site}/pay/{in_parts.token}/")
    assert page.get_by_test_id("amount").inner_text() == "UGX 250,000"
    assert page.get_by_test_id("paid-so-far").inner_text() == "UGX 200,000"
    shots(page, f"3-balance-{page.viewport_name}")
    page.get_by_label("Amount to pay now (UGX)").fill("250,000")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Pay UGX 250,000 with Dummy (development)").click()
    page.get_by_role("button", name="Pay", exact=True).click()
    page.locator(".state.paid").wait_for(timeout=20_000)
    in_parts.refresh_from_db()
    assert in_parts.status == PaymentRequest.Status.PAID
    assert sorted(Payment.objects.values_list("amount_minor", "applied_minor", "review_flag")) == [
        (200_000, 200_000, ""),
        (250_000, 250_000, ""),
    ]


def test_the_page_reads_in_french_and_shows_the_test_mode_banner(browse, site, shots, payment_request, school):  # noqa: F811
    AccountFactory(school=school, provider="dummy", webhook_secret="dummy-secret", test_mode=True)
    page = browse
    page.goto(f"{site}/pay/{payment_request.token}/")
    banner = page.get_by_test_id("test-banner")
    assert banner.is_visible() and inside_viewport(page, ".test-banner")
    assert banner.bounding_box()["y"] == 0  # across the top, above everything
    assert banner.inner_text().startswith("TEST MODE: no real money moves.")
    shots(page, f"1-test-mode-{page.viewport_name}")

    page.get_by_role("link", name="Français").click()
    assert page.evaluate("document.documentElement.lang") == "fr"
    assert page.locator("h1").inner_text() == "Payer Term 1 fees"
    assert page.get_by_test_id("amount").inner_text() == "450\u202f000\u00a0UGX"
    assert page.get_by_test_id("test-banner").inner_text().startswith("MODE TEST")
    shots(page, f"2-french-{page.viewport_name}")

    page.get_by_role("button", name="Payer avec Dummy (development)").click()
    page.wait_for_url(f"{site}/payments/simulate/**")
    assert page.get_by_test_id("test-banner").is_visible()
    page.get_by_role("button", name="Refuser le paiement").click()
    page.wait_for_url(f"{site}/payments/*/thanks")
    page.locator(".state.failed").wait_for(timeout=20_000)
    assert page.locator("h1").inner_text() == "Paiement refusé"
    assert page.get_by_role("link", name="Réessayer").is_visible()
    assert page.get_by_text("Merci", exact=True).count() == 0
    shots(page, f"3-declined-french-{page.viewport_name}")


def test_after_a_report_the_page_waits_for_the_school(browse, site, shots, payment_request, dummy_account):  # noqa: F811
    page = browse
    page.goto(f"{site}/pay/{payment_request.token}/")
    page.get_by_label("Bank transfer").check()
    page.get_by_label("Reference").fill("BANK-REF-1")
    page.get_by_role("button", name="Send to the school").click()
    page.wait_for_url(f"{site}/payments/*/thanks")
    assert page.locator(".state").inner_text() == "Waiting for the school"
    page.goto(f"{site}/pay/{payment_request.token}/")
    assert page.get_by_test_id("waiting").is_visible()
    assert page.get_by_role("button", name="Pay with Dummy (development)").count() == 0
    shots(page, f"waiting-for-the-school-{page.viewport_name}")
    assert Payment.objects.get().status == PaymentStatus.AWAITING_REVIEW


def test_the_home_page_and_an_unknown_address(browse, site, shots, db):  # noqa: F811
    page = browse
    page.goto(f"{site}/")
    assert page.locator("h1").inner_text() == "School fee payments"
    shots(page, f"home-{page.viewport_name}")
    response = page.goto(f"{site}/no/such/page")
    assert response.status == 404
    assert page.locator("h1").inner_text() == "Page not found"


@pytest.fixture
def demo_fakes(settings, tmp_path):
    """``make run``'s demo data and fakes: every fake provider on one port, its hosted pages
    there, the demo's webhook endpoints registered on them."""
    from demo.seed import demo_fakes_connect, demo_seed
    from fakes.app import build_fakes
    from fakes.server import serve_in_thread

    settings.BASE_DIR = tmp_path
    fakes = build_fakes()
    server = serve_in_thread(fakes)
    for prefix, fake in fakes.by_prefix.items():
        fake.public_url = f"{server.base_url}{prefix}"
    for slug in ("stripe", "paystack", "flutterwave", "chapa", "omise"):
        setattr(settings, f"{slug.upper()}_API_BASE_URL", f"{server.base_url}/{slug}")
    settings.MPESA_SANDBOX_API_BASE_URL = settings.MPESA_API_BASE_URL = f"{server.base_url}/mpesa"
    login = demo_seed()
    demo_fakes_connect(fakes=fakes, login=login, public_base_url=settings.PUBLIC_BASE_URL)
    yield login, server.base_url
    server.stop()


def test_the_demo_pays_with_stripe_and_m_pesa_through_their_fakes(chromium, site, shots, demo_fakes):  # noqa: F811
    login, fakes_url = demo_fakes
    context = chromium.new_context(**PHONE)
    page = context.new_page()

    # Stripe: the fake's hosted checkout, its signed webhook, back to the thanks page.
    page.goto(f"{site}{login.pay_path}")
    assert page.get_by_test_id("test-banner").is_visible()
    assert "Stripe: Card 4242 4242 4242 4242" in page.get_by_test_id("test-banner").inner_text()
    page.get_by_role("button", name="Pay with Stripe").click()
    page.wait_for_url(f"{fakes_url}/stripe/checkout/**")
    shots(page, "1-stripe-checkout")
    page.get_by_role("button", name="Pay", exact=True).click()
    page.wait_for_url(f"{site}/payments/*/thanks")
    page.locator(".state.paid").wait_for(timeout=20_000)
    shots(page, "2-stripe-paid")
    stripe_request = PaymentRequest.objects.get(token=login.pay_path.split("/")[2])
    assert stripe_request.status == PaymentRequest.Status.PAID
    assert Payment.objects.get(pk=stripe_request.paid_payment_id).provider == "stripe"

    # M-Pesa: the prompt goes to the fake's "phone", whose PIN sends Daraja's callback.
    page.goto(f"{site}{login.kenya_pay_path}?lang=en")
    page.get_by_role("button", name="Send M-Pesa (Daraja) prompt").click()
    page.wait_for_url(f"{site}/payments/*/thanks")
    phone = context.new_page()
    phone.goto(f"{fakes_url}/mpesa/phone")
    shots(phone, "3-mpesa-phone")
    phone.get_by_role("button", name="Enter PIN and pay").click()
    assert "Paid. The callback was delivered (HTTP 202)." in phone.inner_text("main")
    page.locator(".state.paid").wait_for(timeout=30_000)
    shots(page, "4-mpesa-paid")
    kenya_request = PaymentRequest.objects.get(token=login.kenya_pay_path.split("/")[2])
    assert kenya_request.status == PaymentRequest.Status.PAID
    assert Payment.objects.get(pk=kenya_request.paid_payment_id).provider == "mpesa"
    context.close()


@pytest.mark.parametrize(
    ("school_code", "button", "hosted"),
    [
        ("ng", "Pay with Flutterwave", "/flutterwave/checkout/"),
        ("nrb", "Pay with Paystack", "/paystack/checkout/"),
        ("add", "Pay with Chapa", "/chapa/checkout/"),
        ("bkk", "Pay with Omise", "/omise/offsites/"),
    ],
)
def test_every_hosted_checkout_of_the_demo_completes(chromium, site, shots, demo_fakes, school_code, button, hosted):  # noqa: F811
    """Paystack, Flutterwave, Chapa and Omise: the fake's page, its signed webhook, "Paid"."""
    login, fakes_url = demo_fakes
    pay_path = login.pay_path if school_code == "ng" else dict(login.regional_pay_paths)[school_code]
    context = chromium.new_context(**LAPTOP)
    page = context.new_page()
    page.goto(f"{site}{pay_path}?lang=en")
    page.get_by_role("button", name=button).click()
    page.wait_for_url(f"{fakes_url}{hosted}**")
    page.get_by_role("button", name="Pay", exact=True).click()
    page.wait_for_url(f"{site}/payments/*/thanks**")
    page.locator(".state.paid").wait_for(timeout=30_000)
    shots(page, f"paid-{school_code}")
    context.close()
    paid = PaymentRequest.objects.get(token=pay_path.split("/")[2])
    assert paid.status == PaymentRequest.Status.PAID
    assert Payment.objects.get(pk=paid.paid_payment_id).provider == button.rsplit(" ", 1)[1].lower()


@pytest.mark.parametrize(("school_code", "button"), [("bkk", "Pay with Omise"), ("ng", "Pay with Flutterwave")])
def test_a_card_declined_on_a_fake_checkout_reads_as_declined(chromium, site, shots, demo_fakes, school_code, button):  # noqa: F811
    login, fakes_url = demo_fakes
    pay_path = login.pay_path if school_code == "ng" else dict(login.regional_pay_paths)[school_code]
    context = chromium.new_context(**PHONE)
    page = context.new_page()
    page.goto(f"{site}{pay_path}")
    page.get_by_role("button", name=button).click()
    page.wait_for_url(f"{fakes_url}/**")
    page.get_by_role("button", name="Decline").click()
    page.wait_for_url(f"{site}/payments/*/thanks**")
    page.locator(".state.failed").wait_for(timeout=30_000)
    assert page.locator("h1").inner_text() == "Payment declined"
    assert page.get_by_role("link", name="Try again").is_visible()
    shots(page, f"declined-{school_code}")
    context.close()
    assert PaymentRequest.objects.get(token=pay_path.split("/")[2]).status == PaymentRequest.Status.OPEN
