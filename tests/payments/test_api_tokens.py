"""API tokens are stored hashed (django-rest-knox): made in admin or by a command and shown once,
existing DRF tokens migrated by hashing them, and a header that cannot be a token refused."""

import hashlib
import re

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from knox.models import AuthToken
from rest_framework.test import APIClient

from payments.api_tokens import api_token_create
from tests.payments.conftest import make_staff

pytestmark = pytest.mark.django_db


def api_status(token) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get("/api/payment-requests/").status_code


def test_only_a_digest_of_the_token_is_stored(staff):
    token = api_token_create(user=staff)
    assert api_status(token) == 200
    stored = AuthToken.objects.get(user=staff)
    assert stored.digest == hashlib.sha512(token.encode()).hexdigest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM knox_authtoken")
        assert token not in repr(cursor.fetchall())
    stored.delete()  # revoked
    assert api_status(token) == 401


@pytest.mark.parametrize("header", ["\x00" * 64, "é" * 40, "A" * 64, "0" * 65, "0'--"])
def test_a_header_that_cannot_be_a_token_is_401(staff, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {header}")
    response = client.get("/api/payment-requests/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


def test_the_command_prints_the_token_once(staff, capsys):
    call_command("create_api_token", "bursar", "--expires-in-days", "30")
    token = re.search(r"\(shown once\): ([0-9a-f]{64})$", capsys.readouterr().out.strip()).group(1)
    assert api_status(token) == 200
    assert AuthToken.objects.get(user=staff).expiry is not None


def test_admin_shows_a_new_token_once_and_never_again(client, staff, school):
    root = make_staff("root", superuser=True)
    client.force_login(root)
    response = client.post("/admin/knox/authtoken/add/", {"user": staff.pk})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    token = re.search(r'<code id="api-token">([0-9a-f]{64})</code>', response.content.decode()).group(1)
    assert api_status(token) == 200
    listing = client.get("/admin/knox/authtoken/").content.decode()
    assert token[:15] in listing and token not in listing
    stored = AuthToken.objects.get(user=staff)
    detail = client.get(f"/admin/knox/authtoken/{stored.pk}/change/").content.decode()
    assert token not in detail


def test_school_staff_cannot_make_tokens(client, staff):
    client.force_login(staff)
    assert client.get("/admin/knox/authtoken/add/").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_existing_drf_tokens_are_hashed_and_their_plain_keys_deleted():
    executor = MigrationExecutor(connection)
    executor.migrate([("payments", "0004_webhook_event_superseded_secret_headers")])
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("old-client", is_staff=True)
    key = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"  # DRF's documentation example
    with connection.cursor() as cursor:
        cursor.execute('CREATE TABLE IF NOT EXISTS authtoken_token ("key" varchar(40) PRIMARY KEY, '
                       "created timestamptz NOT NULL, user_id integer NOT NULL)")
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, now(), %s)", [key, user.pk])
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
        migrated = AuthToken.objects.get(user=user)
        assert (migrated.token_key, migrated.expiry) == (key[:15], None)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM authtoken_token")
            assert cursor.fetchone()[0] == 0
        from payments.models import School, StaffMembership

        StaffMembership.objects.create(user=user, school=School.objects.create(code="old", name="Old", currency="UGX"))
        assert api_status(key) == 200  # the client keeps its key
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS authtoken_token")
