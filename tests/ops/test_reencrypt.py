"""`manage.py reencrypt_secrets`: during a key rotation, every encrypted value (webhook secrets,
API credentials, QuickBooks tokens) moves to the newest key; idempotent, resumable, batched, and
never overwriting a secret the service saved meanwhile."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from core.fields import _fernet
from ops import services
from payments.models import AuditLog, ProviderAccount
from quickbooks_sync.models import QboConnection
from tests.factories import AccountFactory, SchoolFactory

pytestmark = pytest.mark.django_db

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


@pytest.fixture
def keys(settings):
    def use(*keys):
        settings.FIELD_ENCRYPTION_KEYS = list(keys)
        _fernet.cache_clear()

    use(OLD_KEY)
    yield use
    _fernet.cache_clear()


def raw(model, pk, column) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {model._meta.db_table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def opens(key: str, token: str) -> bool:
    try:
        Fernet(key.encode()).decrypt(token.encode())
    except InvalidToken:
        return False
    return True


@pytest.fixture
def stored(keys):
    """Three accounts and a QuickBooks connection, all encrypted with the old key."""
    school = SchoolFactory(code="ng")
    accounts = [
        AccountFactory(
            school=school if index == 0 else SchoolFactory(code=f"s{index}"),
            provider="surepay",
            webhook_secret=f"whsec-{index}",
            api_key=f"sk_live_{index}" if index != 2 else "",
            credentials={"passkey": f"pk-{index}"},
        )
        for index in range(3)
    ]
    qbo = QboConnection.objects.create(school=school, access_token="access-1", refresh_token="refresh-1")
    return accounts, qbo


def test_every_encrypted_value_moves_to_the_newest_key(stored, keys, capsys):
    accounts, qbo = stored
    keys(NEW_KEY, OLD_KEY)
    call_command("reencrypt_secrets", "--batch-size", "2")
    out = capsys.readouterr().out
    # 3 webhook secrets + 2 API keys + 3 credentials + 2 QuickBooks tokens; empty values stay empty.
    assert "10 encrypted values checked, 10 re-encrypted." in out
    assert "payments.ProviderAccount.webhook_secret: 3 re-encrypted" in out
    assert "quickbooks_sync.QboConnection.refresh_token: 1 re-encrypted" in out
    for account in accounts:
        assert opens(NEW_KEY, raw(ProviderAccount, account.pk, "webhook_secret"))
        assert opens(NEW_KEY, raw(ProviderAccount, account.pk, "credentials"))
    assert raw(ProviderAccount, accounts[2].pk, "api_key") == ""
    assert opens(NEW_KEY, raw(QboConnection, qbo.pk, "access_token"))
    # The old key can go: everything still reads the same with the new key alone.
    keys(NEW_KEY)
    again = ProviderAccount.objects.order_by("pk")
    assert [(a.webhook_secret, a.api_key, a.credentials) for a in again] == [
        ("whsec-0", "sk_live_0", {"passkey": "pk-0"}),
        ("whsec-1", "sk_live_1", {"passkey": "pk-1"}),
        ("whsec-2", "", {"passkey": "pk-2"}),
    ]
    assert QboConnection.objects.get().refresh_token == "refresh-1"
    entry = AuditLog.objects.get(action="secrets.reencrypted")
    assert entry.details["rewritten"] == 10
    assert "whsec" not in str(entry.details) and "sk_live" not in out


def test_a_second_run_changes_nothing(stored, keys, capsys):
    accounts, _ = stored
    keys(NEW_KEY, OLD_KEY)
    call_command("reencrypt_secrets")
    tokens = [raw(ProviderAccount, a.pk, "webhook_secret") for a in accounts]
    capsys.readouterr()
    call_command("reencrypt_secrets")
    assert "10 encrypted values checked, 0 re-encrypted." in capsys.readouterr().out
    assert [raw(ProviderAccount, a.pk, "webhook_secret") for a in accounts] == tokens
    assert AuditLog.objects.filter(action="secrets.reencrypted").count() == 1


def test_an_interrupted_run_is_finished_by_the_next(stored, keys, monkeypatch):
    accounts, _ = stored
    keys(NEW_KEY, OLD_KEY)
    batches = []
    real_atomic = services.transaction.atomic

    def atomic_failing_on_the_second_batch(*args, **kwargs):
        batches.append(1)
        if len(batches) == 2:
            raise KeyboardInterrupt  # the operator's Ctrl-C, or a killed pod
        return real_atomic(*args, **kwargs)

    monkeypatch.setattr(services.transaction, "atomic", atomic_failing_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        services.secrets_reencrypt(batch_size=1)
    monkeypatch.setattr(services.transaction, "atomic", real_atomic)
    # The first batch (one account) is done, the rest not.
    done = [opens(NEW_KEY, raw(ProviderAccount, a.pk, "webhook_secret")) for a in accounts]
    assert done == [True, False, False]
    report = services.secrets_reencrypt(batch_size=1)
    assert report.rewritten == 10 - 3  # the first account's secret, API key and credentials were done
    assert all(opens(NEW_KEY, raw(ProviderAccount, a.pk, "webhook_secret")) for a in accounts)


def test_a_secret_saved_by_the_service_during_the_run_is_kept(stored, keys, monkeypatch):
    accounts, _ = stored
    keys(NEW_KEY, OLD_KEY)
    from core import fields

    original = fields.fernet

    class RacingFernet:
        """Rotates as usual, but the service rotates the first account's webhook secret just
        before our write lands."""

        def __init__(self):
            self.inner = original()
            self.raced = False

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def rotate(self, token):
            if not self.raced:
                self.raced = True
                ProviderAccount.objects.filter(pk=accounts[0].pk).update(webhook_secret="whsec-new")
            return self.inner.rotate(token)

    monkeypatch.setattr(fields, "fernet", RacingFernet)
    report = services.secrets_reencrypt()
    assert report.changed_meanwhile == 1
    assert ProviderAccount.objects.get(pk=accounts[0].pk).webhook_secret == "whsec-new"


def test_check_says_whether_an_old_key_can_be_removed(stored, keys, capsys):
    keys(NEW_KEY, OLD_KEY)
    with pytest.raises(CommandError, match="10 values are still on an older key: run reencrypt_secrets first."):
        call_command("reencrypt_secrets", "--check")
    assert not AuditLog.objects.filter(action="secrets.reencrypted").exists()
    call_command("reencrypt_secrets")
    capsys.readouterr()
    call_command("reencrypt_secrets", "--check")
    assert "10 encrypted values checked, 0 still on an older key." in capsys.readouterr().out


def test_a_value_no_key_opens_is_reported_and_left_alone(stored, keys):
    accounts, _ = stored
    keys(NEW_KEY)  # the old key removed before re-encrypting: its values cannot be read
    token = raw(ProviderAccount, accounts[0].pk, "webhook_secret")
    with pytest.raises(CommandError) as raised:
        call_command("reencrypt_secrets")
    message = str(raised.value)
    assert message.startswith("No key in FIELD_ENCRYPTION_KEYS opens these values (was a key removed too early?): ")
    assert f"payments.ProviderAccount.webhook_secret pk={accounts[0].pk}" in message
    assert token not in message
    assert raw(ProviderAccount, accounts[0].pk, "webhook_secret") == token


def test_a_batch_size_below_one_is_refused():
    with pytest.raises(CommandError, match="--batch-size must be at least 1"):
        call_command("reencrypt_secrets", "--batch-size", "0")
