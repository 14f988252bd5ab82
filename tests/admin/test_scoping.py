"""A school's staff see and touch only their school's rows, in every admin: lists, detail and
change pages, history, actions and forms. Superusers see every school."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.core import checks
from django.urls import reverse

from payments.models import AuditLog, Payment, PaymentRequest, Student
from quickbooks_sync.models import QboPaymentSync
from tests.admin.conftest import make_school_staff

# Every admin a staff user has a permission on (the staff group); StaffMembership is superuser-only.
STAFF_MODELS = {
    "payments": [
        "school", "provideraccount", "student", "paymentrequest", "payment", "webhookevent", "auditlog", "transactionfact",
        "refundrequest",
    ],  # fmt: skip
    "quickbooks_sync": ["qboconnection", "qbopaymentsync", "qboadjustmentsync", "qbocustomer"],
    "events": ["webhookendpoint", "endpointdelivery"],
}
CASES = [(app, model) for app, models in STAFF_MODELS.items() for model in models]


def test_every_admin_of_our_apps_is_covered_here():
    registered = {
        (model._meta.app_label, model._meta.model_name)
        for model in admin.site._registry
        if model._meta.app_label in STAFF_MODELS
    }
    assert registered == set(CASES) | {("payments", "staffmembership")}


def listed_pks(response) -> set:
    if "cl" in response.context:
        return {obj.pk for obj in response.context["cl"].result_list}
    return {row["connection"].pk for row in response.context["rows"] if row["connection"]}  # QuickBooks overview


@pytest.mark.parametrize(("app", "model"), CASES)
def test_the_list_shows_only_the_staff_members_school(client_a, world, app, model):
    mine, theirs = world[0].rows[model], world[1].rows[model]
    response = client_a.get(reverse(f"admin:{app}_{model}_changelist"))
    assert response.status_code == 200
    assert listed_pks(response) == {mine.pk}
    assert theirs.pk not in listed_pks(response)


@pytest.mark.parametrize(("app", "model"), CASES)
def test_another_schools_row_is_not_found_by_its_url(client_a, world, app, model):
    mine, theirs = world[0].rows[model], world[1].rows[model]
    assert client_a.get(reverse(f"admin:{app}_{model}_change", args=[mine.pk])).status_code == 200
    for view in ("change", "history"):
        response = client_a.get(reverse(f"admin:{app}_{model}_{view}", args=[theirs.pk]))
        # Exactly what Django admin answers for a deleted row: back to the index, "doesn't exist".
        assert response.status_code == 302, view
        assert response["Location"] == reverse("admin:index")


def test_the_list_search_and_filters_never_reach_another_school(client_a, world):
    theirs = world[1].rows["payment"]
    url = reverse("admin:payments_payment_changelist")
    assert listed_pks(client_a.get(url, {"q": theirs.external_txn_id})) == set()
    # Filtering by the other school's id shows nothing (the school filter offers only mine).
    response = client_a.get(url, {"school": world[1].school.pk})
    assert listed_pks(response) == set()
    assert world[1].school.code not in response.content.decode()


@pytest.mark.parametrize(("app", "model"), [case for case in CASES if case[1] != "qboconnection"])
@pytest.mark.parametrize("value", ["9" * 5000, "-1", "1.0", "01"])
def test_a_school_filter_value_that_is_no_school_of_mine_lists_nothing(client_a, world, app, model, value):
    response = client_a.get(reverse(f"admin:{app}_{model}_changelist"), {"school": value})
    # 302: the list has no school filter, and Django's admin answers an unknown filter so.
    assert response.status_code in (200, 302)
    if response.status_code == 200:
        assert listed_pks(response) == set()


def test_a_change_post_to_another_schools_row_changes_nothing(client_a, world):
    theirs = world[1].rows["paymentrequest"]
    response = client_a.post(
        reverse("admin:payments_paymentrequest_change", args=[theirs.pk]),
        {"description": "hijacked", "due_date": ""},
    )
    assert response.status_code == 302
    theirs.refresh_from_db()
    assert theirs.description == "bbb term fees"


def test_an_action_on_another_schools_ids_does_nothing_to_them(client_a, world):
    mine, theirs = world[0].rows["paymentrequest"], world[1].rows["paymentrequest"]
    client_a.post(
        reverse("admin:payments_paymentrequest_changelist"),
        {"action": "cancel_requests", "_selected_action": [mine.pk, theirs.pk]},
    )
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.status == PaymentRequest.Status.CANCELLED
    assert theirs.status == PaymentRequest.Status.OPEN

    payment_b = world[1].rows["payment"]
    Payment.objects.filter(pk=payment_b.pk).update(student=world[1].rows["student"], mapping_status="mapped")
    response = client_a.post(
        reverse("admin:payments_payment_changelist"),
        {"action": "retry_quickbooks_sync", "_selected_action": [payment_b.pk]},
    )
    assert response.status_code == 302  # the action ran on the user's own rows: none of these

    sync_b = world[1].rows["qbopaymentsync"]
    client_a.post(
        reverse("admin:quickbooks_sync_qbopaymentsync_changelist"),
        {"action": "retry_sync", "_selected_action": [sync_b.pk]},
    )
    assert QboPaymentSync.objects.get(pk=sync_b.pk).status == "failed"
    assert not AuditLog.objects.filter(action="qbo.sync_retry", school=world[1].school).exists()


def test_a_forged_add_form_cannot_create_a_row_in_another_school(client_a, world):
    response = client_a.post(
        reverse("admin:payments_paymentrequest_add"),
        {"school": world[1].school.pk, "student": world[1].rows["student"].pk, "description": "forged", "amount": "1000", "currency": "KES"},
    )
    assert response.status_code == 200  # the form again, with an error on school
    assert "school" in response.context["adminform"].form.errors
    assert "student" in response.context["adminform"].form.errors  # not a student of the user's schools
    assert not PaymentRequest.objects.filter(description="forged").exists()
    assert not Student.objects.filter(student_number="X-1").exists()


def test_staff_of_two_schools_see_both_and_superusers_see_all(client, world, django_user_model):
    both = make_school_staff("bursar-ab", world[0].school, world[1].school)
    client.force_login(both)
    url = reverse("admin:payments_payment_changelist")
    assert listed_pks(client.get(url)) == {world[0].rows["payment"].pk, world[1].rows["payment"].pk}
    superuser = django_user_model.objects.create_superuser("root", password="x" * 12)
    client.force_login(superuser)
    assert listed_pks(client.get(url)) == {world[0].rows["payment"].pk, world[1].rows["payment"].pk}


def test_staff_without_a_school_see_no_rows(client, world):
    client.force_login(make_school_staff("nobody"))
    for app, model in CASES:
        response = client.get(reverse(f"admin:{app}_{model}_changelist"))
        assert listed_pks(response) == set(), model


def test_staff_cannot_manage_memberships_or_users(client_a):
    assert client_a.get(reverse("admin:payments_staffmembership_changelist")).status_code == 403
    assert client_a.get(reverse("admin:auth_user_changelist")).status_code == 403


def test_the_quickbooks_pages_and_banner_are_scoped(client_a, world):
    from quickbooks_sync.models import QboConnection

    QboConnection.objects.update(status=QboConnection.Status.NEEDS_RECONNECT)
    html = client_a.get(reverse("admin:index")).content.decode()
    assert "School AAA" in html and "School BBB" not in html  # the reconnect banner
    assert client_a.post(f"/qbo/{world[1].school.code}/disconnect/").status_code == 404


def test_an_admin_without_the_scoping_fails_the_start_up_check():
    original = admin.site._registry[Student]
    admin.site.unregister(Student)
    admin.site.register(Student, admin.ModelAdmin)
    try:
        errors = [error for error in checks.run_checks(tags=[checks.Tags.admin]) if error.id == "payments.E001"]
    finally:
        admin.site.unregister(Student)
        admin.site.register(Student, type(original))
    assert len(errors) == 1
    assert "Student" in errors[0].msg
