"""API tokens are stored hashed: every DRF authtoken key becomes a django-rest-knox token (its
SHA-512 digest and first characters), and the plain keys are deleted.

Clients keep their key: ``Authorization: Token <key>`` works as before. DRF's authtoken app is no
longer installed, so its table is read with plain SQL when it exists (databases made before
this release); its rows are deleted, the empty table is left as it is.
"""

from django.db import migrations


def hash_existing_tokens(apps, schema_editor):
    from knox.crypto import hash_token
    from knox.settings import CONSTANTS

    connection = schema_editor.connection
    if "authtoken_token" not in connection.introspection.table_names():
        return
    AuthToken = apps.get_model("knox", "AuthToken")
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, user_id, created FROM authtoken_token")
        rows = cursor.fetchall()
    for key, user_id, created in rows:
        token = AuthToken.objects.create(
            digest=hash_token(key), token_key=key[: CONSTANTS.TOKEN_KEY_LENGTH], user_id=user_id, expiry=None
        )
        AuthToken.objects.filter(pk=token.pk).update(created=created)  # auto_now_add on create
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM authtoken_token")


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0005_ledger"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(hash_existing_tokens, migrations.RunPython.noop)]
