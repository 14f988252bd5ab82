"""Payment requests: what a parent is asked to pay, one at a time or from a CSV file."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

from django.db import transaction
from django.utils import timezone

from core.money import MAX_MINOR_AMOUNT, MoneyError, currency_code, parse_major_amount
from payments import locks
from payments.audit import audit_entry, audit_record
from payments.contact import ContactInvalid, parent_email_clean, parent_phone_clean
from payments.models import (
    AuditLog,
    PaymentRequest,
    School,
    Student,
)

logger = logging.getLogger(__name__)

# --- Payment requests ---------------------------------------------------------------


class PaymentRequestInvalid(Exception):
    """Input that cannot become a payment request. ``errors`` maps a field to a message that is
    safe to show to staff."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))


class PaymentRequestStateError(Exception):
    """The request is not in a state that allows this (e.g. cancelling a paid request)."""


@dataclass(frozen=True)
class PaymentRequestDraft:
    """A checked, not yet saved payment request."""

    student: Student
    description: str
    amount_minor: int
    currency: str
    due_date: date | None
    parent_email: str = ""
    parent_phone: str = ""


def payment_request_draft(
    *,
    school: School,
    student_number: str,
    description: str,
    amount: str | int | None = None,
    amount_minor: int | None = None,
    currency: str | None = "",
    due_date: date | str | None = None,
    parent_email: str | None = "",
    parent_phone: str | None = "",
    students: Mapping[str, Student] | None = None,
) -> PaymentRequestDraft:
    """Check what staff typed (admin, API or one CSV row) and return a draft, or raise
    ``PaymentRequestInvalid`` with every problem at once.

    ``amount`` is in major units and parsed strictly for the currency (``"450,000"`` UGX,
    ``"1,500.50"`` KES: more decimals than the currency has is an error, never a rounding);
    ``amount_minor`` is an integer count of minor units. Exactly one of them. The student is the
    school's student number and must be known (Django admin: Students). ``students`` is an
    optional look-up table for bulk imports.
    """
    errors: dict[str, str] = {}
    number = (student_number or "").strip()
    student = None
    if not number:
        errors["student_id"] = "This field is required."
    elif students is not None:
        student = students.get(number)
    else:
        student = Student.objects.filter(school=school, student_number=number).first()
    if number and student is None:
        errors["student_id"] = f"Unknown student {number!r} at {school.code}."

    text = (description or "").strip()
    if not text:
        errors["description"] = "This field is required."
    elif len(text) > 200:
        errors["description"] = "At most 200 characters."

    code = None
    try:
        code = currency_code((currency or "").strip() or school.currency)
    except MoneyError as exc:
        errors["currency"] = str(exc)

    minor = None
    given = [value for value in (amount, amount_minor) if value not in (None, "")]
    if len(given) != 1:
        errors["amount"] = "Give the amount (major units) or amount_minor, not both." if given else "This field is required."
    elif amount_minor not in (None, ""):
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
            errors["amount_minor"] = "Must be a whole number of minor units."
        elif amount_minor > MAX_MINOR_AMOUNT:
            # The same refusal as for an amount typed in major units (core.money).
            errors["amount_minor"] = f"amount_minor {amount_minor} is implausibly large"
        else:
            minor = amount_minor
    elif code is not None:
        try:
            minor = parse_major_amount(amount.strip() if isinstance(amount, str) else amount, code)
        except MoneyError as exc:
            errors["amount"] = str(exc)
    if minor is not None and minor <= 0:
        errors["amount_minor" if amount_minor not in (None, "") else "amount"] = "Must be greater than zero."
        minor = None

    due = None
    if isinstance(due_date, datetime):
        errors["due_date"] = "Give a date (YYYY-MM-DD), not a time."
    elif isinstance(due_date, date):
        due = due_date
    elif isinstance(due_date, str) and due_date.strip():
        try:
            due = date.fromisoformat(due_date.strip())
        except ValueError:
            errors["due_date"] = f"{due_date.strip()!r} is not a date (YYYY-MM-DD)."

    email, phone = "", ""
    try:
        email = parent_email_clean(parent_email)
    except ContactInvalid as exc:
        errors["parent_email"] = str(exc)
    try:
        phone = parent_phone_clean(parent_phone)
    except ContactInvalid as exc:
        errors["parent_phone"] = str(exc)

    if errors:
        raise PaymentRequestInvalid(errors)
    return PaymentRequestDraft(
        student=student, description=text, amount_minor=minor, currency=code, due_date=due,
        parent_email=email, parent_phone=phone,
    )  # fmt: skip




def payment_request_create(*, school: School, draft: PaymentRequestDraft, actor=None) -> PaymentRequest:
    """Save one payment request and its audit entry; it gets its pay-link token here."""
    return payment_requests_create_many(school=school, drafts=[draft], actor=actor)[0]


def payment_requests_create_many(
    *, school: School, drafts: list[PaymentRequestDraft], actor=None, source: str = "staff"
) -> list[PaymentRequest]:
    """Save checked drafts all together or not at all (one transaction)."""
    if any(draft.student.school_id != school.pk for draft in drafts):
        raise PaymentRequestInvalid({"student_id": "The student belongs to another school."})
    actor_name = getattr(actor, "username", "") or "system"
    with transaction.atomic():
        requests = [
            PaymentRequest(
                school=school,
                student=draft.student,
                description=draft.description,
                amount_minor=draft.amount_minor,
                currency=draft.currency,
                due_date=draft.due_date,
                parent_email=draft.parent_email,
                parent_phone=draft.parent_phone,
                created_by=actor if getattr(actor, "pk", None) else None,
            )
            for draft in drafts
        ]
        # Saved one by one: bulk_create does not return ids on every database, and imports are
        # a few thousand rows at most.
        for payment_request in requests:
            payment_request.save()
        AuditLog.objects.bulk_create(
            audit_entry(
                action="payment_request.created",
                actor_type=AuditLog.ActorType.STAFF if actor is not None else AuditLog.ActorType.SYSTEM,
                actor=actor_name,
                school_id=school.pk,
                target=payment_request,
                details={
                    "student_number": payment_request.student.student_number,
                    "amount_minor": payment_request.amount_minor,
                    "currency": payment_request.currency,
                    "source": source,
                },
            )
            for payment_request in requests
        )
    return requests


def payment_request_cancel(*, payment_request_id: int, actor) -> PaymentRequest:
    """Staff withdraw an open request. Money that still arrives for it is kept and flagged."""
    with transaction.atomic():
        payment_request = locks.payment_request(payment_request_id)
        if payment_request.status == PaymentRequest.Status.CANCELLED:
            return payment_request
        if payment_request.status != PaymentRequest.Status.OPEN:
            raise PaymentRequestStateError(f"A {payment_request.status} request cannot be cancelled.")
        payment_request.status = PaymentRequest.Status.CANCELLED
        payment_request.cancelled_at = timezone.now()
        payment_request.save(update_fields=["status", "cancelled_at", "updated_at"])
        audit_record(
            action="payment_request.cancelled",
            actor_type=AuditLog.ActorType.STAFF,
            actor=getattr(actor, "username", "") or "",
            school_id=payment_request.school_id,
            target=payment_request,
        )
    return payment_request


# CSV import: one row per request. ``student_id`` is the school's student number; ``amount`` is
# in major units; ``currency`` may be blank (the school's); ``due_date`` is YYYY-MM-DD or blank;
# ``parent_email`` and ``parent_phone`` are optional columns.
CSV_COLUMNS = ("student_id", "description", "amount", "currency", "due_date", "parent_email", "parent_phone")
CSV_REQUIRED_COLUMNS = ("student_id", "description", "amount")
CSV_MAX_ROWS = 5000
CSV_MAX_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class CsvRowError:
    line: int  # the line number in the file, header = 1
    field: str
    message: str


@dataclass
class CsvImportResult:
    created: list[PaymentRequest] = field(default_factory=list)
    errors: list[CsvRowError] = field(default_factory=list)
    rows: int = 0


def payment_requests_import_csv(*, school: School, data: bytes, actor=None) -> CsvImportResult:
    """Check every row first; create all requests in one transaction only when no row has an
    error. Nothing is half-imported: any error means nothing is saved, and every error is
    reported with its line and column."""
    result = CsvImportResult()
    if len(data) > CSV_MAX_BYTES:
        result.errors.append(CsvRowError(0, "(file)", f"The file is larger than {CSV_MAX_BYTES // 1024} KB."))
        return result
    try:
        text = data.decode("utf-8-sig")  # Excel writes a byte-order mark
    except UnicodeDecodeError:
        result.errors.append(CsvRowError(0, "(file)", "The file is not UTF-8 text. Save it as CSV UTF-8."))
        return result
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [(name or "").strip().lower() for name in (reader.fieldnames or [])]
    missing = [name for name in CSV_REQUIRED_COLUMNS if name not in header]
    if missing:
        result.errors.append(
            CsvRowError(1, "(header)", f"Missing column(s): {', '.join(missing)}. Expected: {', '.join(CSV_COLUMNS)}.")
        )
        return result
    reader.fieldnames = header
    students = {student.student_number: student for student in Student.objects.filter(school=school)}
    drafts: list[PaymentRequestDraft] = []
    try:
        for row in reader:
            line = reader.line_num
            if not any((value or "").strip() for key, value in row.items() if key is not None):
                continue  # a blank line
            result.rows += 1
            if result.rows > CSV_MAX_ROWS:
                result.errors.append(CsvRowError(line, "(file)", f"More than {CSV_MAX_ROWS} rows; split the file."))
                break
            if row.get(None):
                result.errors.append(CsvRowError(line, "(row)", "More values than columns."))
                continue
            try:
                drafts.append(
                    payment_request_draft(
                        school=school,
                        student_number=row.get("student_id") or "",
                        description=row.get("description") or "",
                        amount=row.get("amount") or "",
                        currency=row.get("currency") or "",
                        due_date=row.get("due_date") or "",
                        parent_email=row.get("parent_email") or "",
                        parent_phone=row.get("parent_phone") or "",
                        students=students,
                    )
                )
            except PaymentRequestInvalid as exc:
                result.errors.extend(CsvRowError(line, name, message) for name, message in exc.errors.items())
    except csv.Error as exc:
        result.errors.append(CsvRowError(reader.line_num, "(file)", f"Not a readable CSV file: {exc}"))
    if not result.errors and not drafts:
        result.errors.append(CsvRowError(0, "(file)", "The file has no rows."))
    if result.errors:
        return result
    result.created = payment_requests_create_many(school=school, drafts=drafts, actor=actor, source="csv")
    return result
