"""Provider accounts were once called aggregator accounts: renaming the model moved no data, staff
keep their permissions, and old admin bookmarks still lead to the accounts."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.payments.conftest import make_staff


@pytest.mark.django_db(transaction=True)
def test_a_group_allowed_to_see_aggregator_accounts_still_sees_provider_accounts(client, school, account):
    executor = MigrationExecutor(connection)
    executor.migrate([("payments", "0008_refund_requests_parent_contact")])
    try:
        old = Permission.objects.get(content_type__app_label="payments", codename="view_aggregatoraccount")
        auditors = Group.objects.create(name="auditors")
        auditors.permissions.add(old)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM payments_aggregatoraccount")
            accounts_before = cursor.fetchone()[0]
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert set(auditors.permissions.values_list("codename", flat=True)) == {"view_provideraccount"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM payments_aggregatoraccount")
        assert cursor.fetchone()[0] == accounts_before >= 1
    viewer = make_staff("auditor", school)
    viewer.groups.add(auditors)
    client.force_login(viewer)
    listing = client.get("/admin/payments/provideraccount/")
    assert listing.status_code == 200
    assert f"/admin/payments/provideraccount/{account.pk}/change/" in listing.content.decode()


@pytest.mark.django_db
def test_an_old_admin_bookmark_redirects_to_the_provider_account(client):
    answer = client.get("/admin/payments/aggregatoraccount/7/change/?tab=1")
    assert (answer.status_code, answer["Location"]) == (301, "/admin/payments/provideraccount/7/change/?tab=1")
