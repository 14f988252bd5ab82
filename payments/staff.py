"""School staff: the permission group every staff user is given, and creating a staff user.

What a staff user may *do* is this group's model permissions; which rows they may do it to is
their ``StaffMembership`` (``payments.admin.scoping``). The group is kept in step with
``STAFF_PERMISSIONS`` after every ``migrate`` (post_migrate), so a new permission reaches every
school's staff by deploying, not by clicking.
"""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Q

from payments import locks
from payments.audit import audit_record
from payments.models import AuditLog, School, StaffMembership
from payments.services import OnboardingError

STAFF_GROUP_NAME = "School staff"

# app label -> codenames. Not here, so superuser-only: schools, staff memberships, users, groups.
STAFF_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "payments": (
        "view_school",
        "view_student",
        "view_paymentrequest",
        "add_paymentrequest",
        "change_paymentrequest",
        "view_payment",
        "change_payment",  # review, map a student, refund, retry the QuickBooks sync
        "view_webhookevent",
        "change_webhookevent",  # replay
        "view_provideraccount",
        "add_provideraccount",
        "change_provideraccount",  # rotate the secret, test mode, IP allowlist
        "view_auditlog",
        "view_transactionfact",
        "view_refundrequest",
        "change_refundrequest",  # resolve a refund whose provider answer was lost
    ),
    "quickbooks_sync": (
        "view_qboconnection",
        "change_qboconnection",  # connect, configure, retry syncs
        "view_qbopaymentsync",
        "view_qboadjustmentsync",
        "view_qbocustomer",
    ),
    "events": (
        "view_webhookendpoint",
        "add_webhookendpoint",
        "change_webhookendpoint",  # rotate the secret, enable again
        "view_endpointdelivery",
        "change_endpointdelivery",  # replay
        "view_deliveryattempt",
    ),
}


def staff_group_ensure() -> Group:
    """The staff group with exactly ``STAFF_PERMISSIONS`` (idempotent)."""
    group, _ = Group.objects.get_or_create(name=STAFF_GROUP_NAME)
    wanted = Q(pk__in=[])
    for app_label, codenames in STAFF_PERMISSIONS.items():
        wanted |= Q(content_type__app_label=app_label, codename__in=codenames)
    group.permissions.set(Permission.objects.filter(wanted))
    return group


def staff_group_sync_after_migrate(**_signal_kwargs) -> None:
    staff_group_ensure()


def staff_user_create(*, school_code: str, username: str, email: str = "", actor: str = "cli") -> tuple[object, str]:
    """A staff login for one school: ``is_staff``, in the staff group, a member of the school.
    Returns the user and a generated password, for the caller to show once. An existing user is
    given the membership (and the group) and no new password ("" is returned)."""
    school = School.objects.filter(code=school_code.strip().lower()).first()
    if school is None:
        raise OnboardingError(f"unknown school {school_code!r}")
    user_model = get_user_model()
    with transaction.atomic():
        user = locks.staff_user(username)
        password = ""
        if user is None:
            password = secrets.token_urlsafe(12)
            user = user_model.objects.create_user(username=username, email=email, password=password, is_staff=True)
        elif not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        user.groups.add(staff_group_ensure())
        _, joined = StaffMembership.objects.get_or_create(user=user, school=school)
        if joined:
            audit_record(
                action="staff.added",
                actor_type=AuditLog.ActorType.SYSTEM if actor == "cli" else AuditLog.ActorType.STAFF,
                actor=actor,
                school_id=school.pk,
                target=user,
                details={"username": username},
            )
    return user, password
