"""Each staff list is read in its default order from an index, (school, ...) for one school's
staff, (created_at, id) for a superuser's list of every school: a page costs its own rows, not a
sort of every row it could show."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction

from payments import selectors
from payments.models import Payment, StaffMembership
from tests.factories import AccountFactory, PaymentFactory

INDEXES = {
    "payment_school_created": ("payments_payment", "school_id, created_at, id"),
    "payment_request_school_created": ("payments_paymentrequest", "school_id, created_at, id"),
    "audit_log_school_created": ("payments_auditlog", "school_id, created_at, id"),
    "fact_school_occurred": ("payments_transactionfact", "school_id, occurred_at, id"),
    "qbo_sync_school_created": ("quickbooks_sync_qbopaymentsync", "school_id, created_at, id"),
    # A superuser's lists, of every school.
    "payment_created": ("payments_payment", "created_at, id"),
    "payment_status_created": ("payments_payment", "status, created_at, id"),
    "payment_request_created": ("payments_paymentrequest", "created_at, id"),
    "webhook_event_received": ("payments_webhookevent", "received_at, id"),
    "qbo_sync_created": ("quickbooks_sync_qbopaymentsync", "created_at, id"),
}


@pytest.mark.django_db
def test_the_migrations_create_the_lists_indexes():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, tablename, indexdef FROM pg_indexes WHERE indexname = ANY(%s)", [list(INDEXES)]
        )
        found = {name: (table, definition) for name, table, definition in cursor.fetchall()}
    assert set(found) == set(INDEXES)
    for name, (table, columns) in INDEXES.items():
        assert found[name][0] == table
        assert found[name][1].endswith(f"USING btree ({columns})"), found[name][1]


@pytest.mark.django_db
def test_one_schools_staff_read_their_payment_list_from_the_index_without_a_sort(school):
    account = AccountFactory(school=school)
    for _ in range(3):
        PaymentFactory(account=account)
    PaymentFactory(account=AccountFactory())  # another school's
    bursar = get_user_model().objects.create_user("bursar", is_staff=True)
    StaffMembership.objects.create(user=bursar, school=school)
    # The list's query: the staff scope, the default order made total by the primary key.
    page = Payment.objects.filter(selectors.user_schools_q(user=bursar)).order_by("-created_at", "-pk")[:100]
    assert len(page) == 3
    with transaction.atomic():
        with connection.cursor() as cursor:
            # A few rows would be read whole; the plan for many rows is the one under test.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_bitmapscan = off")
            # Sorting one row is cheapest; whether the scope lets the index give the order is
            # what is tested (behind a subquery it cannot, whatever a sort costs).
            cursor.execute("SET LOCAL enable_sort = off")
        plan = page.explain()
    assert "Index Scan Backward using payment_school_created" in plan, plan
    assert "Sort" not in plan, plan
