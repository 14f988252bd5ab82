"""Giving a school a staff login: the command, the staff group, and what such a user can do."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from payments.models import AuditLog, StaffMembership
from payments.staff import STAFF_GROUP_NAME, STAFF_PERMISSIONS, staff_group_ensure


def test_the_group_exists_after_migrate_with_exactly_the_staff_permissions(db):
    group = Group.objects.get(name=STAFF_GROUP_NAME)
    held = set(group.permissions.values_list("content_type__app_label", "codename"))
    assert held == {(app, codename) for app, codenames in STAFF_PERMISSIONS.items() for codename in codenames}
    group.permissions.clear()
    staff_group_ensure()  # what every migrate does
    assert group.permissions.count() == len(held)


def test_create_staff_user_gives_a_login_that_works_once_shown(client, world, capsys):
    call_command("create_staff_user", "aaa", "clerk", "--email", "clerk@example.org")
    out = capsys.readouterr().out
    password = re.search(r"Password \(shown once\): (\S+)", out).group(1)
    # Through the login form: the login lockout (django-axes) authenticates only with a request.
    assert client.post("/admin/login/?next=/admin/", {"username": "clerk", "password": password}).status_code == 302
    html = client.get("/admin/").content.decode()
    assert "Payments" in html and "Users" not in html
    assert StaffMembership.objects.filter(user__username="clerk", school__code="aaa").exists()
    entry = AuditLog.objects.get(action="staff.added")
    assert password not in str(entry.details)

    # Again, for a second school: the same user joins it, no new password is printed.
    call_command("create_staff_user", "bbb", "clerk")
    assert "Password" not in capsys.readouterr().out
    assert StaffMembership.objects.filter(user__username="clerk").count() == 2


def test_an_unknown_school_is_an_error(db):
    with pytest.raises(CommandError, match="unknown school"):
        call_command("create_staff_user", "nope", "clerk")
