"""The provider operators' commands: simulate_webhook against a live server, rotate_webhook_secret,
and create_provider_account for providers with special secrets (Paystack, M-Pesa)."""

import hashlib
import hmac
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from payments.models import AuditLog, ProviderAccount, WebhookEvent
from tests.conftest import surepay_body
from tests.factories import AccountFactory, PaymentFactory, SchoolFactory


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- simulate_webhook ----------------------------------------------------------------------------


@pytest.fixture
def live_school(transactional_db):
    return SchoolFactory(code="ng", name="Nile Gardens School", currency="UGX")


@pytest.mark.parametrize(
    ("provider", "secret", "api_key"),
    [
        ("stripe", "whsec_live_sim", "sk_test_sim"),
        ("paystack", "sk_test_sim_key", "sk_test_sim_key"),
        ("chapa", "chapa-sim", "CHASECK_TEST-sim"),
        ("flutterwave", "flw-sim", "FLWSECK_TEST-sim"),
        ("omise", "b21pc2Utc2lt", "skey_test_sim"),
        ("surepay", "surepay-sim", ""),
        ("dummy", "dummy-sim", ""),
    ],
)
def test_simulated_webhooks_are_accepted_by_a_live_server(live_server, live_school, provider, secret, api_key):
    AccountFactory(school=live_school, provider=provider, webhook_secret=secret, api_key=api_key, test_mode=True)
    out = run("simulate_webhook", "--provider", provider, "--school", "ng", "--count", "3", "--url", live_server.url)
    lines = out.splitlines()
    assert lines[0].startswith(f"Sent 3 {provider} webhooks (")
    assert f"to {live_server.url}/api/webhooks/{provider}/ng in " in lines[0]
    assert lines[1] == "  202: 3"
    assert lines[2].startswith("Latency ms: p50 ")
    assert WebhookEvent.objects.filter(account__provider=provider, status__in=["pending", "processed"]).count() == 3


def test_an_invalid_signature_and_a_rate(live_server, live_school):
    AccountFactory(school=live_school, provider="stripe", webhook_secret="whsec_x1", api_key="sk_test_x", test_mode=True)
    out = run("simulate_webhook", "--provider", "stripe", "--school", "ng", "--invalid-signature", "--count", "2",
              "--url", live_server.url)
    assert out.splitlines()[1] == "  401: 2"
    out = run("simulate_webhook", "--provider", "stripe", "--school", "ng", "--type", "charge.refunded", "--amount", "2500",
              "--rate", "20", "--duration", "0.5", "--url", live_server.url)
    assert out.splitlines()[0].startswith("Sent 10 stripe webhooks (charge.refunded)")
    assert out.splitlines()[1] == "  202: 10"
    assert WebhookEvent.objects.filter(event_type="charge.refunded").count() == 10


def test_mpesa_callbacks_go_to_pushes_we_started(live_server, live_school):
    account = AccountFactory(school=live_school, provider="mpesa", webhook_secret="mpesa-sim-secret")
    with pytest.raises(CommandError, match="no open M-Pesa payment"):
        run("simulate_webhook", "--provider", "mpesa", "--school", "ng", "--url", live_server.url)
    PaymentFactory(account=account, provider_checkout_id="ws_CO_sim_1", amount_minor=150_000, currency="KES")
    out = run("simulate_webhook", "--provider", "mpesa", "--school", "ng", "--url", live_server.url)
    assert out.splitlines()[1] == "  202: 1"
    assert WebhookEvent.objects.get().external_event_id == "ws_CO_sim_1"


@pytest.mark.django_db
def test_simulate_webhook_bad_input(school):
    with pytest.raises(CommandError, match="has no active stripe account"):
        run("simulate_webhook", "--provider", "stripe", "--school", "ng")
    AccountFactory(school=school, provider="stripe", webhook_secret="whsec_x2")
    with pytest.raises(CommandError, match="unknown --type 'nope' for stripe"):
        run("simulate_webhook", "--provider", "stripe", "--school", "ng", "--type", "nope")
    with pytest.raises(CommandError, match="has decimals but UGX"):
        run("simulate_webhook", "--provider", "stripe", "--school", "ng", "--amount", "10.5")
    with pytest.raises(CommandError, match="--rate and --duration go together"):
        run("simulate_webhook", "--provider", "stripe", "--school", "ng", "--rate", "5")


# --- rotate_webhook_secret -------------------------------------------------------------------------


def sign(body, secret):
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.django_db
def test_rotation_keeps_the_old_secret_for_the_grace_period(client, account):
    out = run("rotate_webhook_secret", "ng", "surepay", "--grace-hours", "24")
    lines = out.splitlines()
    assert lines[0] == "Rotated the surepay webhook secret of school ng."
    assert lines[1].startswith("The old secret keeps verifying until ")
    new_secret = lines[2].rsplit(": ", 1)[1]
    account.refresh_from_db()
    assert (account.webhook_secret, account.previous_webhook_secret) == (new_secret, "sekret")
    old = surepay_body(event_id="evt-old")
    new = surepay_body(event_id="evt-new")
    assert client.post("/api/webhooks/surepay/ng", data=old, content_type="application/json",
                       HTTP_X_SIGNATURE=sign(old, "sekret")).status_code == 202
    assert client.post("/api/webhooks/surepay/ng", data=new, content_type="application/json",
                       HTTP_X_SIGNATURE=sign(new, new_secret)).status_code == 202
    entry = AuditLog.objects.get(action="secret.rotated")
    assert entry.details["grace_hours"] == 24.0 and new_secret not in str(entry.details) and "sekret" not in str(entry.details)


@pytest.mark.django_db
def test_a_zero_grace_ends_the_old_secret_at_once(client, account):
    out = run("rotate_webhook_secret", "ng", "surepay", "--grace-hours", "0")
    assert out.splitlines()[1] == "The old secret no longer verifies."
    body = surepay_body()
    response = client.post("/api/webhooks/surepay/ng", data=body, content_type="application/json",
                           HTTP_X_SIGNATURE=sign(body, "sekret"))
    assert response.status_code == 401


@pytest.mark.django_db
def test_paystack_rotation_takes_the_rolled_key(school):
    run("create_provider_account", "ng", "paystack", "--api-key", "sk_test_first_key", "--test-mode")
    with pytest.raises(CommandError, match="roll the key in its dashboard"):
        run("rotate_webhook_secret", "ng", "paystack")
    out = run("rotate_webhook_secret", "ng", "paystack", "--secret", "sk_test_second_key")
    assert "sk_test_second_key" not in out
    account = ProviderAccount.objects.get(provider="paystack")
    assert (account.webhook_secret, account.api_key, account.previous_webhook_secret) == (
        "sk_test_second_key", "sk_test_second_key", "sk_test_first_key")
    assert account.webhook_secrets() == ["sk_test_second_key", "sk_test_first_key"]


@pytest.mark.django_db
def test_rotation_bad_input(school, account):
    with pytest.raises(CommandError, match="school 'ng' has no stripe account"):
        run("rotate_webhook_secret", "ng", "stripe")
    with pytest.raises(CommandError, match="the new secret is the current one"):
        run("rotate_webhook_secret", "ng", "surepay", "--secret", "sekret")
    with pytest.raises(CommandError, match="grace period must be between 0 and 720 hours"):
        run("rotate_webhook_secret", "ng", "surepay", "--grace-hours", "-1")


# --- create_provider_account for special providers ----------------------------------------------------


@pytest.mark.django_db
def test_paystack_accounts_sign_with_the_api_key(school):
    out = run("create_provider_account", "ng", "paystack", "--api-key", "sk_test_abc123")
    assert "sk_test_abc123" not in out
    account = ProviderAccount.objects.get()
    assert account.webhook_secret == account.api_key == "sk_test_abc123"
    with pytest.raises(CommandError, match="signs webhooks with its secret API key"):
        run("create_provider_account", "ng", "paystack")


@pytest.mark.django_db
def test_mpesa_credentials(school):
    run("create_provider_account", "ng", "mpesa", "--credential", "consumer_key=ck", "--credential", "consumer_secret=cs",
        "--credential", "shortcode=174379", "--credential", "passkey=pk=with=equals", "--test-mode")
    account = ProviderAccount.objects.get()
    assert account.credentials == {"consumer_key": "ck", "consumer_secret": "cs", "shortcode": "174379", "passkey": "pk=with=equals"}
    assert len(account.webhook_secret) >= 40
