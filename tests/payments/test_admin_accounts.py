"""Provider accounts in Django admin: create one with a generated secret shown once, rotate it,
switch test mode and active, set an IP allowlist; every page scoped to the staff user's schools;
no page ever renders a secret."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from payments.models import AuditLog, ProviderAccount
from payments.staff import staff_group_ensure
from tests.conftest import sign, surepay_body
from tests.factories import AccountFactory
from tests.payments.conftest import make_staff

pytestmark = pytest.mark.django_db

ADD = "/admin/payments/provideraccount/add/"
LIST = "/admin/payments/provideraccount/"


def change_url(account) -> str:
    return f"/admin/payments/provideraccount/{account.pk}/change/"


def rotate_url(account) -> str:
    return f"/admin/payments/provideraccount/{account.pk}/rotate/"


def shown_secret(html: str) -> str | None:
    match = re.search(r'<code id="webhook-secret">([^<]*)</code>', html)
    return match.group(1) if match else None


def secrets_of(account: ProviderAccount) -> list[str]:
    account.refresh_from_db()
    values = [account.webhook_secret, account.previous_webhook_secret, account.api_key, *account.credentials.values()]
    return [value for value in values if value]


def assert_no_secret(html: str, account: ProviderAccount) -> None:
    for secret in secrets_of(account):
        assert secret not in html


@pytest.fixture
def bursar(school):
    """Staff of school ng with exactly the staff group's permissions, as create_staff_user makes them."""
    user = make_staff("bursar", school)
    user.groups.add(staff_group_ensure())
    return user


@pytest.fixture
def bursar_client(client, bursar):
    client.force_login(bursar)
    return client


def add(client, **fields):
    data = {
        "school": "",
        "provider": "surepay",
        "webhook_secret": "",
        "api_key": "",
        "credentials": "",
        "ip_allowlist": "",
    }
    data.update(fields)
    return client.post(ADD, data)


# --- Creating --------------------------------------------------------------------------------


def test_the_add_page_offers_only_the_users_schools_and_every_provider(bursar_client, school, other_school):
    html = bursar_client.get(ADD).content.decode()
    # A bursar of one school: it is chosen for them (hidden), and no other is offered.
    assert f'<input type="hidden" name="school" value="{school.pk}"' in html
    assert f'value="{other_school.pk}"' not in html
    for slug in ("surepay", "stripe", "paystack", "mpesa", "chapa", "flutterwave", "omise", "dummy"):
        assert f'<option value="{slug}">' in html


def test_creating_shows_the_generated_secret_once_and_the_webhook_url(bursar_client, school, caplog):
    caplog.set_level(logging.DEBUG)
    response = add(bursar_client, school=school.pk, test_mode="on", ip_allowlist="203.0.113.7\n")
    assert response.status_code == 200
    html = response.content.decode()
    account = ProviderAccount.objects.get(school=school, provider="surepay")
    secret = shown_secret(html)
    assert secret and secret == account.webhook_secret and len(secret) >= 40
    assert '<code id="webhook-url">https://pay.example.org/api/webhooks/surepay/ng</code>' in html
    assert "no-store" in response["Cache-Control"]
    assert (account.test_mode, account.active, account.ip_allowlist) == (True, True, "203.0.113.7")
    entry = AuditLog.objects.get(action="account.created")
    assert (entry.actor_type, entry.actor, entry.school_id) == ("staff", "bursar", school.pk)
    assert entry.details == {"provider": "surepay", "test_mode": True, "ip_allowlist": "203.0.113.7"}
    assert secret not in caplog.text

    # Never again: not on the change page, the list, the history, nor by sending the form again.
    for url in (change_url(account), LIST, f"/admin/payments/provideraccount/{account.pk}/history/"):
        page = bursar_client.get(url)
        assert page.status_code == 200
        assert_no_secret(page.content.decode(), account)
    again = add(bursar_client, school=school.pk, test_mode="on", ip_allowlist="203.0.113.7\n")
    assert again.status_code == 200
    assert "school &#x27;ng&#x27; already has a surepay account" in again.content.decode()
    assert_no_secret(again.content.decode(), account)
    assert ProviderAccount.objects.filter(school=school).count() == 1


def test_the_shown_secret_is_the_one_that_verifies(bursar_client, client, school):
    secret = shown_secret(add(bursar_client, school=school.pk).content.decode())
    body = surepay_body()
    response = client.post(
        "/api/webhooks/surepay/ng", data=body, content_type="application/json", HTTP_X_SIGNATURE=sign(body, secret)
    )
    assert response.status_code == 202


def test_a_secret_the_user_typed_is_saved_and_not_echoed(bursar_client, school):
    response = add(bursar_client, school=school.pk, provider="stripe", webhook_secret="whsec_from_stripe_dashboard",
                   api_key="sk_test_abc123")  # fmt: skip
    html = response.content.decode()
    account = ProviderAccount.objects.get(provider="stripe")
    assert (account.webhook_secret, account.api_key) == ("whsec_from_stripe_dashboard", "sk_test_abc123")
    assert shown_secret(html) is None
    assert "The webhook secret you entered is saved" in html
    assert "whsec_from_stripe_dashboard" not in html and "sk_test_abc123" not in html
    # A live account with a test key is saved, with the adapter's own warning.
    assert "The Stripe account is live but its API key is a test key" in html


def test_paystack_needs_its_secret_api_key_instead_of_a_generated_secret(bursar_client, school):
    response = add(bursar_client, school=school.pk, provider="paystack", test_mode="on")
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "api_key": [
            (
                "Paystack signs its webhooks with your secret API key: enter the secret key from Paystack's "
                "dashboard. It is the webhook secret too, so nothing is generated."
            )
        ]
    }
    assert not ProviderAccount.objects.filter(provider="paystack").exists()

    response = add(bursar_client, school=school.pk, provider="paystack", test_mode="on", api_key="sk_test_paystack_1")
    html = response.content.decode()
    account = ProviderAccount.objects.get(provider="paystack")
    assert account.webhook_secret == account.api_key == "sk_test_paystack_1"
    assert shown_secret(html) is None and "sk_test_paystack_1" not in html
    assert "The secret API key you entered signs the webhooks" in html


def test_credentials_are_saved_and_never_sent_back(bursar_client, school):
    typed = "consumer_key=ck_1\nconsumer_secret=cs_secret_1\nshortcode=174379\npasskey=pk_secret_1"
    refused = add(bursar_client, school=school.pk, provider="mpesa", credentials=typed, ip_allowlist="nope")
    html = refused.content.decode()
    assert "cs_secret_1" not in html and "pk_secret_1" not in html  # not even to redisplay the form
    add(bursar_client, school=school.pk, provider="mpesa", credentials=typed)
    account = ProviderAccount.objects.get(provider="mpesa")
    assert account.credentials == {
        "consumer_key": "ck_1",
        "consumer_secret": "cs_secret_1",
        "shortcode": "174379",
        "passkey": "pk_secret_1",
    }
    bad = add(bursar_client, school=school.pk, provider="chapa", credentials="a=1\nsecret-without-a-name")
    assert bad.context["form"].errors == {"credentials": ["Line 2 is not NAME=VALUE."]}
    assert "secret-without-a-name" not in bad.content.decode()


def test_a_bad_allowlist_line_is_a_form_error_naming_it(bursar_client, school):
    response = add(bursar_client, school=school.pk, ip_allowlist="203.0.113.7\n# office\n10.0.0.0/33\n")
    assert response.context["form"].errors == {
        "ip_allowlist": [
            (
                "Line 3: '10.0.0.0/33' is not an IP address or CIDR network "
                "(for example 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32)."
            )
        ]
    }
    assert not ProviderAccount.objects.exists()


def test_an_account_cannot_be_created_for_another_school(bursar_client, other_school):
    response = add(bursar_client, school=other_school.pk, provider="surepay")
    assert response.status_code == 200
    assert "school" in response.context["form"].errors
    assert not ProviderAccount.objects.filter(school=other_school, provider="surepay").exists()


def test_a_superuser_may_create_for_any_school(client, school, other_school):
    client.force_login(make_staff("root", superuser=True))
    add(client, school=other_school.pk, provider="surepay")
    assert ProviderAccount.objects.filter(school=other_school, provider="surepay").exists()


# --- The change page -------------------------------------------------------------------------


@pytest.fixture
def stripe_account(school):
    return AccountFactory(
        school=school,
        provider="stripe",
        webhook_secret="whsec_current_secret",
        previous_webhook_secret="whsec_previous_secret",
        previous_secret_expires_at=timezone.now() + timedelta(hours=3),
        api_key="sk_live_the_api_key",
        credentials={"extra": "credential_value_1"},
    )


def test_the_change_page_shows_no_secret(bursar_client, stripe_account):
    html = bursar_client.get(change_url(stripe_account)).content.decode()
    assert_no_secret(html, stripe_account)
    assert "https://pay.example.org/api/webhooks/stripe/ng" in html
    assert "the previous one also verifies until" in html
    assert f'href="{rotate_url(stripe_account)}" class="rotatelink">Rotate webhook secret</a>' in html
    for name in ("webhook_secret", "previous_webhook_secret", "api_key", "credentials"):
        assert f'name="{name}"' not in html
    assert "/delete/" not in html  # deactivated, never deleted


def test_switching_test_mode_and_the_allowlist_is_audited_by_name(bursar_client, stripe_account):
    response = bursar_client.post(
        change_url(stripe_account), {"test_mode": "on", "active": "on", "ip_allowlist": "2001:db8::/32"}, follow=True
    )
    assert response.status_code == 200
    stripe_account.refresh_from_db()
    assert (stripe_account.test_mode, stripe_account.active, stripe_account.ip_allowlist) == (
        True,
        True,
        "2001:db8::/32",
    )
    entry = AuditLog.objects.get(action="account.updated")
    assert (entry.actor, entry.school_id) == ("bursar", stripe_account.school_id)
    assert entry.details == {
        "provider": "stripe",
        "changed": ["ip_allowlist", "test_mode"],
        "test_mode": True,
        "ip_allowlist": "2001:db8::/32",
    }
    html = response.content.decode()
    assert "The Stripe account is in test mode but its API key is not a test key" in html  # the warning
    assert_no_secret(html, stripe_account)


def test_deactivating_is_audited_and_saving_nothing_is_not(bursar_client, stripe_account):
    bursar_client.post(change_url(stripe_account), {"ip_allowlist": ""})
    assert AuditLog.objects.get(action="account.updated").details["changed"] == ["active"]
    bursar_client.post(change_url(stripe_account), {"ip_allowlist": ""})
    assert AuditLog.objects.filter(action="account.updated").count() == 1


def test_a_bad_allowlist_is_refused_on_the_change_page(bursar_client, stripe_account):
    response = bursar_client.post(change_url(stripe_account), {"active": "on", "ip_allowlist": "203.0.113.7\nnope"})
    assert response.status_code == 200
    assert "Line 2: &#x27;nope&#x27; is not an IP address or CIDR network" in response.content.decode()
    stripe_account.refresh_from_db()
    assert stripe_account.ip_allowlist == ""
    assert not AuditLog.objects.filter(action="account.updated").exists()


def test_a_saved_allowlist_takes_effect_on_the_next_webhook(bursar_client, client, account):
    bursar_client.post(change_url(account), {"active": "on", "ip_allowlist": "203.0.113.7"})
    body = surepay_body()
    response = client.post(
        "/api/webhooks/surepay/ng", data=body, content_type="application/json", HTTP_X_SIGNATURE=sign(body),
        REMOTE_ADDR="198.51.100.9",
    )  # fmt: skip
    assert response.status_code == 403


# --- Rotating --------------------------------------------------------------------------------


def rotate(client, account, **fields):
    page = client.get(rotate_url(account))
    version = page.context["form"]["version"].value()
    return client.post(rotate_url(account), {"grace_hours": "24", "new_secret": "", "version": version, **fields})


def test_rotating_shows_the_new_secret_once_and_keeps_the_old_one_for_the_grace(bursar_client, account):
    page = bursar_client.get(rotate_url(account))
    assert page.status_code == 200
    assert 'name="grace_hours" value="24"' in page.content.decode()
    assert_no_secret(page.content.decode(), account)
    before = timezone.now()
    response = rotate(bursar_client, account, grace_hours="12")
    html = response.content.decode()
    account.refresh_from_db()
    secret = shown_secret(html)
    assert secret and secret == account.webhook_secret != "sekret"
    assert account.previous_webhook_secret == "sekret"
    assert before + timedelta(hours=12) <= account.previous_secret_expires_at <= timezone.now() + timedelta(hours=12)
    assert "https://pay.example.org/api/webhooks/surepay/ng" in html
    assert "no-store" in response["Cache-Control"]
    entry = AuditLog.objects.get(action="secret.rotated")
    assert (entry.actor, entry.details["grace_hours"]) == ("bursar", 12.0)
    assert secret not in str(entry.details)
    assert secret not in bursar_client.get(change_url(account)).content.decode()


def test_a_resubmitted_rotation_rotates_nothing(bursar_client, account):
    page = bursar_client.get(rotate_url(account))
    data = {"grace_hours": "24", "new_secret": "", "version": page.context["form"]["version"].value()}
    first = shown_secret(bursar_client.post(rotate_url(account), data).content.decode())
    again = bursar_client.post(rotate_url(account), data)  # the browser's "reload"
    assert shown_secret(again.content.decode()) is None
    assert "the account changed since this form was opened" in again.content.decode()
    account.refresh_from_db()
    assert (account.webhook_secret, account.previous_webhook_secret) == (first, "sekret")
    assert AuditLog.objects.filter(action="secret.rotated").count() == 1


def test_rotating_paystack_asks_for_the_new_key(bursar_client, school):
    account = AccountFactory(school=school, provider="paystack", webhook_secret="sk_test_old", api_key="sk_test_old",
                             test_mode=True)  # fmt: skip
    page = bursar_client.get(rotate_url(account)).content.decode()
    assert "New secret API key" in page
    refused = rotate(bursar_client, account)
    assert refused.context["form"].errors == {"new_secret": ["Enter the new secret key from Paystack's dashboard."]}
    response = rotate(bursar_client, account, new_secret="sk_test_new_key", grace_hours="0")
    account.refresh_from_db()
    assert (account.webhook_secret, account.api_key, account.previous_webhook_secret) == (
        "sk_test_new_key",
        "sk_test_new_key",
        "",
    )
    html = response.content.decode()
    assert "sk_test_new_key" not in html and shown_secret(html) is None
    assert "The old one no longer verifies" in html


def test_rotation_needs_the_change_permission(client, school, account):
    viewer = make_staff("auditor", school)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_provideraccount"))
    client.force_login(viewer)
    assert client.get(change_url(account)).status_code == 200
    assert client.get(rotate_url(account)).status_code == 403
    assert client.post(rotate_url(account), {"grace_hours": "0", "version": "x"}).status_code == 403
    account.refresh_from_db()
    assert account.webhook_secret == "sekret"


# --- Another school's account ----------------------------------------------------------------


def test_another_schools_account_is_out_of_reach(bursar_client, account, other_school):
    theirs = ProviderAccount.objects.get(school=other_school)
    listed = bursar_client.get(LIST).content.decode()
    assert change_url(account) in listed and change_url(theirs) not in listed
    # By URL: "not found", exactly like a deleted account.
    assert bursar_client.get(change_url(theirs)).status_code == 302
    bursar_client.post(change_url(theirs), {"test_mode": "on", "active": "", "ip_allowlist": "10.0.0.1"})
    assert bursar_client.get(rotate_url(theirs)).status_code == 404
    assert (
        bursar_client.post(rotate_url(theirs), {"grace_hours": "0", "new_secret": "", "version": ""}).status_code == 404
    )
    # By action: the staff group may delete nothing, and actions only see the user's rows.
    response = bursar_client.post(LIST, {"action": "delete_selected", "_selected_action": [theirs.pk]})
    assert response.status_code in (200, 302)
    theirs.refresh_from_db()
    assert (theirs.webhook_secret, theirs.test_mode, theirs.active, theirs.ip_allowlist) == (
        "kla-dummy-secret",
        False,
        True,
        "",
    )
    assert not AuditLog.objects.filter(school=other_school).exists()


def test_a_superuser_sees_and_rotates_every_schools_account(client, account, other_school):
    client.force_login(make_staff("root", superuser=True))
    theirs = ProviderAccount.objects.get(school=other_school)
    listed = client.get(LIST).content.decode()
    assert change_url(account) in listed and change_url(theirs) in listed
    assert shown_secret(rotate(client, theirs).content.decode())


# --- The services behind the pages -------------------------------------------------------------


def test_the_services_refuse_a_bad_allowlist_whoever_calls_them(school, account):
    from payments import services

    with pytest.raises(services.OnboardingError, match=r"^IP allowlist: line 1: 'office' is not an IP address"):
        services.account_create(school_code="ng", provider="stripe", ip_allowlist="office", api_key="sk_test_x")
    with pytest.raises(services.OnboardingError, match=r"^IP allowlist: line 2: '::g' is not"):
        services.account_update(account_id=account.pk, ip_allowlist="::1\n::g")
    assert not ProviderAccount.objects.filter(provider="stripe").exists()
    account.refresh_from_db()
    assert account.ip_allowlist == ""
