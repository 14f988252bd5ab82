"""Which student a payment is for: the School Directory, the known mappings, staff by hand."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from payments import locks, selectors
from payments.audit import audit_record
from payments.models import (
    AuditLog,
    MappingStatus,
    Payment,
    ProviderStudentLink,
    School,
    Student,
)
from payments.services.risk import payment_risk_rescore
from payments.services.settlement import payment_mapped_record, payment_offer_to_books_on_commit

logger = logging.getLogger(__name__)

# --- Student mapping ----------------------------------------------------------------------------


def payment_student_map(*, payment_id: uuid.UUID, directory=None) -> str:
    """Map the payment's provider student id to the school's student.

    Known mappings come from ``ProviderStudentLink``; otherwise the School Directory is asked
    (no lock is held during that call). An unknown student leaves the payment ``unmatched`` for
    staff; it is never dropped. Raises ``DirectoryUnavailable`` for the caller to retry.
    Returns the payment's mapping status.
    """
    payment = Payment.objects.select_related("school").get(pk=payment_id)
    if payment.student_id is not None or not payment.provider_student_id:
        return payment.mapping_status

    student = selectors.known_student(
        school_id=payment.school_id, provider=payment.provider, provider_student_id=payment.provider_student_id
    )
    if student is not None:
        source = "cache"
    else:
        if directory is None:
            from directory_client.client import default_directory_client

            directory = default_directory_client()
        record = directory.lookup_student(
            school_code=payment.school.code,
            provider=payment.provider,
            provider_student_id=payment.provider_student_id,
        )
        if record is None:
            _payment_mapping_set(
                payment,
                status=MappingStatus.UNMATCHED,
                error="The School Directory does not know this student id.",
                action="payment.unmatched",
            )
            return MappingStatus.UNMATCHED
        student = _directory_student_keep(
            school=payment.school,
            provider=payment.provider,
            provider_student_id=payment.provider_student_id,
            record=record,
        )
        source = "directory"

    with transaction.atomic():
        updated = Payment.objects.filter(pk=payment.pk, student__isnull=True).update(
            student=student, mapping_status=MappingStatus.MAPPED, mapping_error="", updated_at=timezone.now()
        )
        if updated:
            payment_risk_rescore(payment_id=payment.pk)  # the student is a sign of its own
            payment_offer_to_books_on_commit(payment_ids=[payment.pk])
            payment.student, payment.mapping_status = student, MappingStatus.MAPPED
            payment_mapped_record(
                payment=payment, student=student, source=source, actor_type=AuditLog.ActorType.SYSTEM, actor="directory"
            )
    return MappingStatus.MAPPED


def _directory_student_keep(*, school: School, provider: str, provider_student_id: str, record) -> Student:
    """The student the School Directory named, kept with the mapping (``ProviderStudentLink``)
    so the provider's student id is known from now on."""
    student = student_upsert(school=school, student_number=record.student_id, full_name=record.full_name)
    ProviderStudentLink.objects.get_or_create(
        school_id=school.pk,
        provider=provider,
        provider_student_id=provider_student_id,
        defaults={"student": student, "source": ProviderStudentLink.Source.DIRECTORY},
    )
    return student


def provider_students_learn(*, account, provider_student_ids: Iterable[str], directory=None) -> set[str]:
    """Ask the School Directory, before a batch of events settles their payments, about the
    provider student ids of this account with no known mapping, and keep each student it names
    (as ``payment_student_map`` does), so the batch maps the payments in its own transaction
    rather than each in a transaction of its own afterwards. Returns the ids learnt now.

    One attempt each and no waiting: an id the directory does not know, or a directory that is
    slow or down, is left to each payment's own mapping after the batch, with its retries and
    its ``unmatched`` outcome."""
    ids = set(provider_student_ids) - set(
        ProviderStudentLink.objects.filter(
            school_id=account.school_id, provider=account.provider, provider_student_id__in=set(provider_student_ids)
        ).values_list("provider_student_id", flat=True)
    )
    if not ids:
        return set()
    from directory_client.client import DirectoryUnavailable, default_directory_client

    if directory is None:
        directory = default_directory_client(attempts=1)
    learnt = set()
    for provider_student_id in sorted(ids):
        try:
            record = directory.lookup_student(
                school_code=account.school.code, provider=account.provider, provider_student_id=provider_student_id
            )
        except DirectoryUnavailable:
            break
        if record is not None:
            _directory_student_keep(
                school=account.school, provider=account.provider, provider_student_id=provider_student_id, record=record
            )
            learnt.add(provider_student_id)
    return learnt


class MappingRefused(Exception):
    """Staff asked to map a payment that cannot be mapped by hand; the message says why."""


def payment_student_assign(*, payment_id: uuid.UUID, student_number: str, full_name: str = "", actor) -> Student:
    """Staff map a payment to a student by hand (the directory did not know the student, was
    down, or no student id came with the payment).

    The student is the school's student with that number, created from ``full_name`` when it
    is new to us. Only a payment without a student can be mapped: re-pointing a mapped payment
    would leave QuickBooks with the old customer. The provider's student id is remembered
    (``ProviderStudentLink``, source staff), so the next payment with it maps by itself, and
    the payment is offered to QuickBooks when this commits."""
    student_number = student_number.strip()
    if not student_number:
        raise MappingRefused("Enter the school's student id.")
    with transaction.atomic():
        payment = locks.payment(payment_id, related=("school",))
        if payment.student_id is not None:
            raise MappingRefused(f"This payment is already mapped to student {payment.student}.")
        student = Student.objects.filter(school_id=payment.school_id, student_number=student_number).first()
        if student is None:
            if not full_name.strip():
                raise MappingRefused(
                    f"No student {student_number} is known at this school yet: enter their full name to add them."
                )
            student = student_upsert(school=payment.school, student_number=student_number, full_name=full_name.strip())
        if payment.provider_student_id:
            ProviderStudentLink.objects.update_or_create(
                school_id=payment.school_id,
                provider=payment.provider,
                provider_student_id=payment.provider_student_id,
                defaults={"student": student, "source": ProviderStudentLink.Source.STAFF},
            )
        previous = payment.mapping_status
        payment.student = student
        payment.mapping_status = MappingStatus.MAPPED
        payment.mapping_error = ""
        payment.save(update_fields=["student", "mapping_status", "mapping_error", "updated_at"])
        payment_risk_rescore(payment_id=payment.pk)
        payment_offer_to_books_on_commit(payment_ids=[payment.pk])
        payment_mapped_record(
            payment=payment, student=student, source="staff", actor_type=AuditLog.ActorType.STAFF,
            actor=actor.get_username(), previous=previous,
        )  # fmt: skip
    return student


def payment_mapping_fail(*, payment_id: uuid.UUID, error: str) -> None:
    """The directory stayed unavailable through every retry: make it visible to staff."""
    payment = Payment.objects.get(pk=payment_id)
    if payment.student_id is None:
        _payment_mapping_set(payment, status=MappingStatus.FAILED, error=error, action="payment.mapping_failed")


def _payment_mapping_set(payment: Payment, *, status: str, error: str, action: str) -> None:
    with transaction.atomic():
        updated = Payment.objects.filter(pk=payment.pk, student__isnull=True).update(
            mapping_status=status, mapping_error=error, updated_at=timezone.now()
        )
        if updated:
            audit_record(
                action=action,
                actor_type=AuditLog.ActorType.SYSTEM,
                actor="directory",
                school_id=payment.school_id,
                target=payment,
                details={"provider_student_id": payment.provider_student_id, "error": error},
            )


def student_upsert(*, school: School, student_number: str, full_name: str) -> Student:
    student, created = Student.objects.get_or_create(
        school=school, student_number=student_number, defaults={"full_name": full_name}
    )
    if not created and full_name and student.full_name != full_name:
        student.full_name = full_name
        student.save(update_fields=["full_name", "updated_at"])
    return student
