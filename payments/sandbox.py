"""What a parent types on a test-mode account's checkout: each provider's own test card or phone
numbers, from its documentation (the link above each entry). Shown in the test-mode banner of
every parent page, so no one mistakes a test payment for a real one."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

TEST_DETAILS: dict[str, list[str]] = {
    # https://docs.stripe.com/testing#cards
    "stripe": [_("Card 4242 4242 4242 4242, any future expiry date, any CVC.")],
    # https://paystack.com/docs/payments/test-payments/
    "paystack": [_("Card 4084 0840 8408 4081, any future expiry date, CVV 408, PIN 0000, OTP 123456.")],
    # https://developer.flutterwave.com/docs/integration-guides/testing-helpers
    "flutterwave": [_("Card 5531 8866 5214 2950, expiry 09/32, CVV 564, PIN 3310, OTP 12345.")],
    # https://developer.chapa.co/docs/testing-cards and /docs/testing-mobile
    "chapa": [
        _("Card 4200 0000 0000 0000, expiry 12/34, CVV 123."),
        _("telebirr or M-Pesa phone 0900123456 (mobile money)."),
    ],
    # https://docs.omise.co/api-testing
    "omise": [_("Card 4242 4242 4242 4242, any future expiry date, any security code.")],
    # https://developer.safaricom.co.ke (M-Pesa Express sandbox: test MSISDN)
    "mpesa": [_("Phone 254708374149 (the Safaricom sandbox's test number).")],
    "dummy": [_("No card is needed: the dummy provider's page has Pay and Decline buttons.")],
}


def test_details(slug: str) -> list[str]:
    return [str(line) for line in TEST_DETAILS.get(slug, [])]
