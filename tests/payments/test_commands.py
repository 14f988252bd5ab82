"""The ops bootstrap commands, run as an operator runs them (argv in, exit code and output out)."""

import pytest
from django.conf import settings
from django.core.management import execute_from_command_line

from demo.seed import demo_seed
from payments.models import AuditLog, ProviderAccount, School

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _keep_test_connection(monkeypatch):
    # run_from_argv closes every connection when it ends, which would end the test transaction.
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)


def run(*argv):
    """Run ``manage.py <argv>`` as the shell does; return its exit code."""
    try:
        execute_from_command_line(["manage.py", *argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code


def test_create_school(capsys):
    assert run("create_school", "kla", "Kampala Hill School", "--currency", "ugx", "--time-zone", "Africa/Kampala") == 0
    assert capsys.readouterr().out.strip() == "Created school kla (Kampala Hill School), currency UGX, time zone Africa/Kampala."
    school = School.objects.get(code="kla")
    assert (school.name, school.currency, school.time_zone, school.active) == ("Kampala Hill School", "UGX", "Africa/Kampala", True)
    assert AuditLog.objects.filter(action="school.created", target_id=str(school.pk)).exists()


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (("create_school", "kla", "X", "--currency", "ZZZ"), "CommandError: unknown currency 'ZZZ' (expected an ISO 4217 code such as UGX)"),
        (("create_school", "Bad Code!", "X", "--currency", "UGX"), "CommandError: invalid school code 'bad code!': use 1-32 lower-case letters, digits or '-'"),
        (("create_school", "kla", " ", "--currency", "UGX"), "CommandError: school name must not be empty"),
        (("create_school", "kla", "X", "--currency", "UGX", "--time-zone", "EAT"),
         "CommandError: 'EAT' is not an IANA time zone name (for example Africa/Kampala)."),
    ],
)
def test_create_school_bad_input_is_one_line_and_exit_1(capsys, argv, error):
    assert run(*argv) == 1
    assert capsys.readouterr().err.strip() == error
    assert not School.objects.exists()


def test_create_school_duplicate_code(capsys):
    run("create_school", "kla", "A", "--currency", "UGX")
    capsys.readouterr()
    assert run("create_school", "KLA", "B", "--currency", "UGX") == 1
    assert capsys.readouterr().err.strip() == "CommandError: school 'kla' already exists"
    assert School.objects.get().name == "A"


def test_create_provider_account_generates_and_prints_a_strong_secret(capsys):
    run("create_school", "kla", "A", "--currency", "UGX")
    capsys.readouterr()
    assert run("create_provider_account", "kla", "surepay") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "Created surepay account for school kla."
    assert lines[1] == f"Webhook URL: {settings.PUBLIC_BASE_URL}/api/webhooks/surepay/kla"
    secret = lines[2].rsplit(": ", 1)[1]
    assert len(secret) >= 40
    assert ProviderAccount.objects.get().webhook_secret == secret


def test_create_provider_account_with_a_given_secret_does_not_echo_it(capsys):
    run("create_school", "kla", "A", "--currency", "UGX")
    assert run("create_provider_account", "kla", "SurePay", "--secret", "my-own-secret") == 0
    out = capsys.readouterr().out
    assert "my-own-secret" not in out
    assert ProviderAccount.objects.get().webhook_secret == "my-own-secret"


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (("create_provider_account", "kla", "paypalish"), "CommandError: unknown provider 'paypalish' (known: chapa, dummy, flutterwave, mpesa, omise, paypal, paystack, stripe, surepay)"),
        (("create_provider_account", "nope", "surepay"), "CommandError: unknown school 'nope'"),
        (("create_provider_account", "kla", "surepay", "--secret", "abc"), "CommandError: webhook secret is too short (at least 6 characters)"),
    ],
)
def test_create_provider_account_bad_input(capsys, argv, error):
    run("create_school", "kla", "A", "--currency", "UGX")
    capsys.readouterr()
    assert run(*argv) == 1
    assert capsys.readouterr().err.strip() == error
    assert not ProviderAccount.objects.exists()


def test_create_provider_account_twice(capsys):
    run("create_school", "kla", "A", "--currency", "UGX")
    run("create_provider_account", "kla", "surepay")
    capsys.readouterr()
    assert run("create_provider_account", "kla", "surepay") == 1
    assert capsys.readouterr().err.strip() == "CommandError: school 'kla' already has a surepay account"


def test_demo_seed_twice_keeps_one_of_everything(settings, tmp_path):
    settings.BASE_DIR = tmp_path
    first = demo_seed()
    second = demo_seed()
    assert first == second
    assert School.objects.filter(code="ng").count() == 1
    accounts = ProviderAccount.objects.filter(school__code="ng")
    assert sorted(accounts.values_list("provider", flat=True)) == ["dummy", "flutterwave", "stripe", "surepay"]
    assert accounts.get(provider="surepay").webhook_secret == "sekret"
    assert (tmp_path / ".demo-admin-password").read_text().strip() == first.password
