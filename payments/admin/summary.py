"""A payment's page as a bursar reads it: the summary at the top, what needs doing, and the
timeline in plain words. The raw fields stay on the page, folded, for engineers."""

from __future__ import annotations

from django.urls import reverse
from django.utils.html import format_html

from core.money import format_minor
from core.status import PaymentStatus
from core.timezones import local_display
from payments.admin.display import amount_cell, payment_how, school_time
from payments.models import MappingStatus, Payment
from payments.selectors import TimelineEntry
from payments.state import SETTLED_STATES


def payment_summary_rows(payment: Payment) -> list[tuple[str, object]]:
    """(label, value) rows: who paid, for whom and what, how much, how, when, status."""
    request = payment.payment_request
    student = payment.student or (request.student if request else None)
    rows: list[tuple[str, object]] = [
        ("Amount", amount_cell(payment.amount_display)),
        ("Status", _status_text(payment)),
        ("Student", _student_text(payment, student)),
        ("Paid by", _payer_text(payment)),
        ("How", _how_text(payment)),
        ("When", school_time(payment.settled_at or payment.created_at, payment.school)),
        ("Request", _request_link(request) if request else "No pay link: the provider sent it on its own"),
        ("School", payment.school.name),
    ]
    if payment.receipt:
        rows.append(("Receipt", format_html('<a href="{}">The parent\'s receipt ({})</a>',
                                            reverse("admin:payments_payment_receipt", args=[payment.pk]),
                                            payment.receipt_content_type)))  # fmt: skip
    if payment.external_txn_id or payment.reference:
        rows.append(("Transaction id", payment.external_txn_id or "—"))
        rows.append(("Our reference", payment.reference or "—"))
    return rows


def payment_todo(payment: Payment, *, can_change: bool) -> list[tuple[str, str]]:
    """What a person must do about this payment, as (text, link) pairs; empty when nothing."""
    todo: list[tuple[str, str]] = []
    if payment.status == PaymentStatus.AWAITING_REVIEW:
        todo.append(("Check the money arrived, then confirm or reject this report",
                     reverse("admin:payments_payment_review", args=[payment.pk]) if can_change else ""))  # fmt: skip
    if payment.student_id is None and payment.mapping_status in (MappingStatus.UNMATCHED, MappingStatus.FAILED):
        todo.append(("Map it to a student: the School Directory did not know the id",
                     reverse("admin:payments_payment_map", args=[payment.pk]) if can_change else ""))  # fmt: skip
    if payment.review_flag:
        todo.append((f"{payment.get_review_flag_display()}: {payment.review_flag_reason}".rstrip(": "), ""))
    if payment.ledger_conflict:
        todo.append((f"The provider's reports disagree; check with it: {payment.ledger_conflict}", ""))
    if payment.status == PaymentStatus.DISPUTED:
        todo.append(("The payer disputes it: answer the dispute in the provider's dashboard", ""))
    return todo


def _status_text(payment: Payment) -> str:
    text = payment.get_status_display()
    if payment.refunded_amount_minor:
        text += f" ({format_minor(payment.refunded_amount_minor, payment.currency)} refunded)"
    if payment.charged_back_amount_minor:
        text += f" ({format_minor(payment.charged_back_amount_minor, payment.currency)} charged back)"
    return text


def _student_text(payment: Payment | None, student) -> str:
    if student is not None:
        return f"{student.full_name} ({student.student_number})" if student.full_name else student.student_number
    if payment is not None and payment.provider_student_id:
        return f"Not known yet: the provider says {payment.provider_student_id} ({payment.get_mapping_status_display()})"
    return "Not given"


def _payer_text(payment: Payment) -> str:
    payer = payment.payer or {}
    parts = [str(payer[key]) for key in ("name", "email", "phone") if payer.get(key)]
    if payment.is_manual and payment.manual_reference:
        parts.append(f"their reference {payment.manual_reference}")
    return ", ".join(parts) or "Not given by the provider"


def _how_text(payment: Payment) -> str:
    how = payment_how(payment)
    return f"{how}, reported by the parent" if payment.is_manual else how


def _request_link(request):
    return format_html(
        '<a href="{}">{}</a> ({})',
        reverse("admin:payments_paymentrequest_change", args=[request.pk]),
        request.description,
        request.get_status_display().lower(),
    )


def request_summary_rows(payment_request) -> list[tuple[str, object]]:
    school = payment_request.school
    paid = payment_request.paid_payment
    rows: list[tuple[str, object]] = [
        ("Amount", amount_cell(payment_request.amount_display)),
        ("Status", payment_request.get_status_display()),
        ("Student", _student_text(None, payment_request.student)),
        ("For", payment_request.description),
        ("Due", payment_request.due_date.strftime("%d %B %Y") if payment_request.due_date else "No due date"),
        ("Parent", ", ".join(v for v in (payment_request.parent_email, payment_request.parent_phone) if v) or "Not given"),
        ("Created", school_time(payment_request.created_at, school)),
        ("Pay link", format_html('<a href="{0}" target="_blank" rel="noopener">{0}</a>', payment_request.pay_url)),
    ]
    if paid is not None:
        rows.append(("Paid by", format_html('<a href="{}">{} on {}</a>', reverse("admin:payments_payment_change", args=[paid.pk]),
                                            paid.amount_display, school_time(payment_request.paid_at, school))))  # fmt: skip
    return rows


def request_todo(payment_request) -> list[tuple[str, str]]:
    todo = []
    awaiting = payment_request.payments.filter(status=PaymentStatus.AWAITING_REVIEW).order_by("created_at")
    for payment in awaiting:
        todo.append((f"Review the parent's report of {payment.amount_display}",
                     reverse("admin:payments_payment_review", args=[payment.pk])))  # fmt: skip
    for payment in payment_request.payments.exclude(review_flag="").order_by("created_at"):
        todo.append((f"{payment.amount_display}: {payment.get_review_flag_display()}",
                     reverse("admin:payments_payment_change", args=[payment.pk])))  # fmt: skip
    return todo


# --- The timeline in plain words ----------------------------------------------------------------


def timeline_words(entry: TimelineEntry, payment: Payment) -> str:
    """One line of the timeline as a bursar says it: "Paid UGX 450,000 by Stripe"."""
    details = entry.details or {}
    provider = payment_how(payment)
    action = entry.what
    amount = _amount(details) or payment.amount_display
    if action.startswith("webhook received"):
        kind = details.get("event_type")
        return f"{provider} sent an update" + (f" ({kind})" if kind else "") + (", a repeat" if details.get("status") == "superseded" else "")
    if action == "payment.intent":
        return f"The parent chose to pay {amount} with {provider}"
    if action == "payment.checkout":
        return f"{provider}'s payment page opened for the parent"
    if action == "payment.checkout_failed":
        return f"{provider} could not open its payment page"
    if action == "payment.manual_reported":
        return f"The parent reported a {payment.get_method_display().lower()} of {amount}"
    if action == "payment.mapped":
        by = " by staff" if details.get("source") == "staff" else ""
        return f"Matched to student {details.get('student_number', '')}{by}".rstrip()
    if action == "payment.unmatched":
        return f"The School Directory does not know student {payment.provider_student_id or ''}".rstrip()
    if action == "payment.mapping_failed":
        return "The School Directory could not be asked for the student (will try again)"
    if action == "payment.finalize":
        result = details.get("result", "")
        return "The payment request is paid" if result == "paid" else f"Not settling the request: {details.get('reason', result)}"
    if action == "payment.reviewed":
        decision = "Confirmed" if details.get("decision") == "confirm" else "Rejected"
        return f"{decision} by {entry.actor or 'staff'}" + (f": {details['note']}" if details.get("note") else "")
    if "from" in details and "to" in details:
        return _status_change(details, provider, amount, payment)
    return action.replace(".", ": ").replace("_", " ").capitalize()


def _status_change(details: dict, provider: str, amount: str, payment: Payment) -> str:
    before, after = details["from"], details["to"]
    if not details.get("applied", True):
        return f"{provider} said the same again (nothing changed)"
    if after in SETTLED_STATES and before not in SETTLED_STATES:
        return f"Paid {amount} by {provider}"
    if after in (PaymentStatus.REFUNDED, PaymentStatus.PARTIALLY_REFUNDED):
        refunded = details.get("refunded_minor")
        money = format_minor(refunded, details.get("currency") or payment.currency) if refunded is not None else ""
        return f"Refunded{' ' + money if money else ''} through {provider}"
    if after == PaymentStatus.DISPUTED:
        return f"The payer disputed the payment with {provider}"
    if after == PaymentStatus.CHARGED_BACK:
        return f"Charged back by {provider}"
    if after == PaymentStatus.FAILED:
        return f"{provider} says the payment failed"
    if after == PaymentStatus.EXPIRED:
        return "Expired: the parent did not finish paying"
    if after == PaymentStatus.CANCELLED:
        return "Cancelled"
    if before == after:
        return f"{provider} confirmed: {_label(after).lower()}"
    if before is None:
        return f"Recorded as {_label(after).lower()} ({provider})"
    return f"{_label(before)} → {_label(after)} ({provider})"


def _label(status) -> str:
    try:
        return PaymentStatus(status).label
    except ValueError:
        return str(status)


def _amount(details: dict) -> str:
    try:
        return format_minor(int(details["amount_minor"]), details["currency"])
    except (KeyError, TypeError, ValueError):
        return ""


def timeline_time(entry: TimelineEntry, payment: Payment) -> str:
    return local_display(entry.at, payment.school.time_zone, seconds=True)
