import pytest
from cryptography.fernet import Fernet
from django.db import connection

from core.fields import decrypt_text
from payments.models import ProviderAccount

pytestmark = pytest.mark.django_db


def raw_columns(account_id):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT webhook_secret, api_key, credentials FROM payments_aggregatoraccount WHERE id = %s", [account_id]
        )
        return cursor.fetchone()


def test_secrets_are_encrypted_at_rest(account):
    account.api_key = "sk_test_verysecret"
    account.credentials = {"passkey": "mpesa-passkey-123"}
    account.save()
    webhook_secret, api_key, credentials = raw_columns(account.pk)
    for stored, plaintext in ((webhook_secret, "sekret"), (api_key, "sk_test_verysecret"), (credentials, "mpesa-passkey-123")):
        assert plaintext not in stored
        assert stored.startswith("gAAAA")  # a Fernet token
    assert decrypt_text(webhook_secret) == "sekret"

    fresh = ProviderAccount.objects.get(pk=account.pk)
    assert (fresh.webhook_secret, fresh.api_key, fresh.credentials) == (
        "sekret",
        "sk_test_verysecret",
        {"passkey": "mpesa-passkey-123"},
    )


def test_a_new_key_can_be_prepended_and_old_rows_still_decrypt(account, settings):
    old_keys = list(settings.FIELD_ENCRYPTION_KEYS)
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *old_keys]
    assert ProviderAccount.objects.get(pk=account.pk).webhook_secret == "sekret"


def test_repr_and_str_never_show_secrets(account):
    assert "sekret" not in repr(account) and "sekret" not in str(account)
