"""The parent pages: in the parent's language (the school's default, a switch on every page),
amounts written as that language writes them, a test-mode banner with the provider's test
details, "waiting for the school" after a report, and plain pages at / and at unknown addresses."""

import gettext
import re
from pathlib import Path

import pytest

from core.money import format_minor_for
from payments import services
from tests.factories import AccountFactory

pytestmark = pytest.mark.django_db

LOCALE = Path(__file__).resolve().parents[2] / "locale"


@pytest.mark.parametrize("language", ["fr", "sw"])
def test_the_committed_catalogues_are_compiled_from_their_po_files(language):
    """The .mo files are committed (the image has no gettext): each says what its .po says."""
    po = (LOCALE / language / "LC_MESSAGES" / "django.po").read_text(encoding="utf-8")
    with open(LOCALE / language / "LC_MESSAGES" / "django.mo", "rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    pairs = re.findall(r'^msgid ((?:".*"\n)+)msgstr ((?:".*"\n?)+)', po, re.M)
    joined = [
        tuple("".join(re.findall(r'"(.*)"', part)).encode().decode("unicode_escape").encode("latin-1").decode() for part in pair)
        for pair in pairs
    ]
    translated = [(english, text) for english, text in joined if english and text]
    assert len(translated) >= 100
    assert [(english, compiled.gettext(english)) for english, _ in translated] == translated


@pytest.mark.parametrize(
    ("language", "minor", "currency", "written"),
    [("en", 450_000, "UGX", "UGX 450,000"), ("fr", 450_000, "UGX", "450\u202f000\u00a0UGX"),
     ("fr", 150_050, "KES", "1\u202f500,50\u00a0KES"), ("sw", 150_050, "KES", "KES 1,500.50")],
)  # fmt: skip
def test_amounts_are_written_the_languages_way(language, minor, currency, written):
    assert format_minor_for(minor, currency, language) == written


def test_the_switch_changes_the_language_and_remembers_it(client, payment_request, dummy_account):
    html = client.get(f"/pay/{payment_request.token}/?lang=fr").content.decode()
    assert '<html lang="fr">' in html
    assert "<h2 id=\"due-heading\" class=\"mt-0\">Montant dû</h2>" in html
    assert '<p class="amount" data-testid="amount">450\u202f000\u00a0UGX</p>' in html
    assert ">Payer avec Dummy (development)</button>" in html
    assert f'<a href="/pay/{payment_request.token}/?lang=sw" lang="sw" hreflang="sw">Kiswahili</a>' in html
    response = client.get(f"/pay/{payment_request.token}/")
    assert response["Content-Language"] == "fr"  # the cookie keeps the choice
    assert "Payer maintenant" in response.content.decode()


def test_a_school_sets_the_default_language(client, payment_request, dummy_account):
    payment_request.school.language = "sw"
    payment_request.school.save()
    html = client.get(f"/pay/{payment_request.token}/").content.decode()
    assert '<html lang="sw">' in html and "Lipa sasa" in html and ">Lipa kwa Dummy (development)</button>" in html
    html = client.get(f"/pay/{payment_request.token}/?lang=en").content.decode()
    assert "Pay now" in html


def test_an_unknown_language_is_ignored(client, payment_request, dummy_account):
    response = client.get(f"/pay/{payment_request.token}/?lang=xx")
    assert (response.status_code, response["Content-Language"]) == (200, "en")
    assert "parent_language" not in response.cookies


def test_a_test_mode_account_puts_a_banner_with_its_test_details_on_every_page(client, payment_request, school):
    AccountFactory(school=school, provider="dummy", webhook_secret="dummy-secret", test_mode=True)
    AccountFactory(school=school, provider="stripe", test_mode=True, api_key="sk_test_x")
    html = client.get(f"/pay/{payment_request.token}/").content.decode()
    banner = re.search(r'<section class="test-banner".*?</section>', html, re.S).group(0)
    assert "<strong>Test mode</strong>" in banner
    assert "Stripe: Card 4242 4242 4242 4242, any future expiry date, any CVC." in banner
    assert "No card is needed: the dummy provider&#x27;s page has Pay and Decline buttons." in banner
    payment = services.payment_checkout_start(payment_request_id=payment_request.pk, provider="dummy").payment
    for page in (f"/payments/{payment.pk}/thanks", f"/payments/simulate/{payment.pk}"):
        assert 'data-testid="test-banner"' in client.get(page).content.decode(), page


def test_the_banner_stays_on_a_paid_link_and_after_a_report(client, payment_request, school):
    AccountFactory(school=school, provider="dummy", webhook_secret="dummy-secret", test_mode=True)
    response = client.post(
        f"/pay/{payment_request.token}/manual", {"method": "cash", "amount": "450,000", "reference": ""}
    )
    assert 'data-testid="test-banner"' in client.get(response["Location"]).content.decode()
    payment_request.status, payment_request.cancelled_at = "cancelled", payment_request.created_at
    payment_request.save()
    assert 'data-testid="test-banner"' in client.get(f"/pay/{payment_request.token}/").content.decode()


def test_a_live_account_has_no_banner(client, payment_request, dummy_account):
    assert "test-banner" not in client.get(f"/pay/{payment_request.token}/").content.decode()


def test_after_a_report_the_page_waits_for_the_school_and_offers_no_payment(client, payment_request, dummy_account):
    response = client.post(
        f"/pay/{payment_request.token}/manual", {"method": "bank_transfer", "amount": "450,000", "reference": "BANK-1"}
    )
    assert response.status_code == 302
    html = client.get(f"/pay/{payment_request.token}/").content.decode()
    assert '<h2 id="waiting-heading" class="mt-0">Waiting for the school</h2>' in html
    assert "You reported a bank transfer of UGX 450,000" in html
    assert 'name="provider"' not in html and "Send to the school" not in html


def test_the_home_page_says_what_this_service_is(client, db):
    response = client.get("/")
    assert response.status_code == 200
    assert "<h1>School fee payments</h1>" in response.content.decode()
    assert "<h1>Paiement des frais de scolarité</h1>" in client.get("/?lang=fr").content.decode()


@pytest.mark.parametrize("debug", [True, False])
def test_an_unknown_address_is_a_plain_404_in_every_setting(client, db, settings, debug):
    settings.DEBUG = debug
    response = client.get("/no/such/page")
    assert response.status_code == 404
    html = response.content.decode()
    assert "<h1>Page not found</h1>" in html
    assert "Django" not in html and "URLconf" not in html


def test_a_post_to_an_unknown_address_is_a_404_not_a_csrf_refusal(db):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post("/no/such/form", {"a": "1"})
    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in response.content.decode()


def test_the_home_page_varies_with_the_language_cookie(client, db):
    assert "Cookie" in client.get("/")["Vary"]


def test_a_missing_trailing_slash_still_redirects(client, db):
    response = client.get("/admin")
    assert (response.status_code, response["Location"]) == (301, "/admin/")


def test_a_paid_link_says_so_in_the_parents_language(client, payment_request, dummy_account):
    from core.status import PaymentStatus
    from payments.services import payment_provider_status_apply
    from providers.base import NormalizedStatus

    payment = services.payment_checkout_start(payment_request_id=payment_request.pk, provider="dummy").payment
    payment_provider_status_apply(
        payment_id=payment.pk, status=NormalizedStatus(status=PaymentStatus.SUCCEEDED, amount_minor=450_000, currency="UGX"),
        source="test",
    )  # fmt: skip
    html = client.get(f"/pay/{payment_request.token}/?lang=fr").content.decode()
    assert "<h1>Déjà payé</h1>" in html
    assert "Term 1 fees pour Amina Nakato (450\u202f000\u00a0UGX) a été payé le" in html


def test_a_server_error_is_a_plain_page(rf):
    from payments.views import server_error_view

    response = server_error_view(rf.get("/pay/x/"))
    assert response.status_code == 500
    assert "<h1>Something went wrong on our side</h1>" in response.content.decode()


def test_the_plural_waits_are_translated():
    from django.utils import translation
    from django.utils.translation import ngettext

    english = "Please try again in %(seconds)s second. Nothing you sent was lost: a payment you started is still there."
    plural = english.replace("second.", "seconds.")
    with translation.override("fr"):
        assert ngettext(english, plural, 2) % {"seconds": 2} == (
            "Veuillez réessayer dans 2 secondes. Rien de ce que vous avez envoyé n'est perdu : un paiement commencé est toujours là."
        )
