"""Pay links and receipts in headless Chromium: a bursar on a laptop (1366x768) sends a pay link
by SMS from the request's page; a parent pays it on a phone (390x844), gets the confirmation by
email from a real SMTP server, and opens the receipt at both sizes. A real Celery worker runs the
tasks. Screenshots under ``test-artifacts/<test>/``."""

from __future__ import annotations

import re

import pytest

from payments.models import Notice, PaymentReceipt
from tests.conftest import wait_for
from tests.payments import test_browser as browser
from tests.payments.test_browser import PHONE, open_phone

# The browser fixtures of the parents' browser tests (Chromium, the CSP watch, screenshots).
chromium = browser.chromium
no_csp_violations = browser.no_csp_violations
outside_requests = browser.outside_requests
shots = browser.shots
site = browser.site

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LAPTOP = {"viewport": {"width": 1366, "height": 768}}


def inside_viewport(page, locator) -> bool:
    box = locator.bounding_box()
    width = page.viewport_size["width"]
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width


def test_a_bursar_sends_the_pay_link_by_sms_from_the_request_page(
    chromium, site, shots, payment_request, staff, sms_gateway, outside_requests
):
    payment_request.parent_phone = "0772 123 456"
    payment_request.save()
    context = chromium.new_context(**LAPTOP)
    context.on("request", lambda req: None if req.url.startswith(site) else outside_requests.append(req.url))
    page = context.new_page()
    page.goto(f"{site}/admin/login/?next=/admin/payments/paymentrequest/{payment_request.pk}/change/")
    page.get_by_label("Username:").fill("bursar")
    page.get_by_label("Password:").fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()
    button = page.get_by_role("button", name="Send the pay link by SMS")
    button.wait_for()
    assert button.is_visible() and inside_viewport(page, button)
    assert page.get_by_role("button", name="Send the pay link by email").count() == 0  # no email known
    shots(page, "1-request-page")
    button.click()
    page.wait_for_url(f"{site}/admin/payments/paymentrequest/{payment_request.pk}/change/")
    assert page.locator("ul.messagelist").inner_text() == "Sending 1 pay link(s) by SMS."
    wait_for(lambda: len(sms_gateway.sent) == 1, timeout=20)
    assert sms_gateway.sent[0].to == "+256772123456"
    assert f"/pay/{payment_request.token}/" in sms_gateway.sent[0].body
    page.reload()
    messages = page.locator("#notices-group")
    assert "Pay link" in messages.inner_text() and "Sent" in messages.inner_text()
    assert inside_viewport(page, messages.get_by_text("Sent", exact=True))
    shots(page, "2-sent")
    context.close()
    assert Notice.objects.get().status == "sent"
    assert outside_requests == []


def test_a_parent_pays_and_gets_the_receipt_by_email(
    chromium, site, shots, payment_request, dummy_account, smtp_server, outside_requests
):
    payment_request.parent_email = "mother@example.org"
    payment_request.save()
    context, page = open_phone(chromium, site, outside_requests)
    page.goto(f"{site}/pay/{payment_request.token}/")
    page.get_by_role("button", name="Pay with Dummy (development)").click()
    page.wait_for_url(f"{site}/payments/simulate/**")
    page.get_by_role("button", name="Pay", exact=True).click()
    page.locator(".state.paid").wait_for(timeout=20_000)
    context.close()

    [message] = wait_for(lambda: smtp_server.to("mother@example.org"), timeout=20)
    receipt = PaymentReceipt.objects.get()
    text = message.get_body(("plain",)).get_content()
    url = re.search(r"(http\S+/receipts/\S+/)", text).group(1)
    assert url == f"{site}/receipts/{receipt.token}/"
    assert [part.get_filename() for part in message.iter_attachments()] == [f"receipt-{receipt.number}.pdf"]

    for name, options in (("phone", PHONE), ("laptop", LAPTOP)):
        context = chromium.new_context(**options)
        context.on("request", lambda req: None if req.url.startswith(site) else outside_requests.append(req.url))
        page = context.new_page()
        page.goto(url)
        assert page.get_by_role("heading", level=1).inner_text() == "Payment received"
        amount = page.locator(".receipt-lines div", has_text="Amount paid").locator("dd")
        assert amount.inner_text() == "UGX 450,000"
        assert inside_viewport(page, amount)
        assert page.evaluate("document.documentElement.scrollWidth") <= options["viewport"]["width"]
        link = page.get_by_role("link", name="Download the receipt (PDF)")
        assert link.is_visible() and inside_viewport(page, link)
        pdf = page.request.get(link.get_attribute("href") if link.get_attribute("href").startswith("http") else site + link.get_attribute("href"))
        assert pdf.headers["content-type"] == "application/pdf" and pdf.body().startswith(b"%PDF-")
        shots(page, f"receipt-{name}")
        # Printed, the page is the receipt alone: no footer, no download link.
        page.emulate_media(media="print")
        assert not link.is_visible() and not page.locator("footer").is_visible()
        context.close()
    assert outside_requests == []
