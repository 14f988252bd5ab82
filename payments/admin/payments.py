"""Payments: filters, search, the timeline, staff actions, CSV export, manual-payment review and receipts."""

from __future__ import annotations

import uuid

from django.contrib import admin, messages
from django.contrib.admin.filters import DateFieldListFilter
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ERROR_FLAG
from django.core.exceptions import PermissionDenied
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from core.money import format_minor
from core.status import PaymentStatus
from payments import receipts, selectors, services
from payments.admin.display import (
    AmountSearch,
    CachedValuesFilter,
    ProviderNameFilter,
    SchoolColumnForManySchools,
    amount_cell,
    payment_how,
    school_time,
)
from payments.admin.filters import LedgerConflictFilter, RiskFilter, StatusChangedFilter
from payments.admin.scoping import SchoolScopedAdmin
from payments.admin.summary import payment_summary_rows, payment_todo, timeline_time, timeline_words
from payments.audit import audit_record
from payments.exports import payments_csv_pieces
from payments.forms import MapStudentForm, RefundForm, ReviewForm
from payments.models import AuditLog, MappingStatus, Payment, PaymentRequest, RefundRequest
from payments.state import SETTLED_STATES


@admin.register(Payment)
class PaymentAdmin(SchoolColumnForManySchools, AmountSearch, SchoolScopedAdmin):
    # What a bursar scans, narrow enough for a laptop (1366 px) beside the filters: the rest is on
    # the payment's page, or a filter. The books app adds its "QuickBooks" column before "review".
    list_display = ("date", "student_name", "amount", "status_label", "provider_name", "review_link")
    list_display_links = ("date",)
    list_filter = (
        "status",
        ("provider", ProviderNameFilter),
        ("currency", CachedValuesFilter),
        ("created_at", DateFieldListFilter),
        ("settled_at", DateFieldListFilter),
        ("status_changed_at", StatusChangedFilter),
        LedgerConflictFilter,
        RiskFilter,
        "mapping_status",
        # The books app adds its sync-state filter here (quickbooks_sync.admin).
        "method",
        "review_flag",
        "school",
    )
    # Student (number or name, ours or the provider's id), transaction id, our reference or the
    # parent's, the request's description; an amount as typed ("450,000") is matched too.
    search_fields = (
        "student__student_number",
        "student__full_name",
        "payment_request__student__full_name",
        "provider_student_id",
        "external_txn_id",
        "reference",
        "manual_reference",
        "payment_request__description",
    )
    search_help_text = "Student name or number, transaction id, reference, the parent's reference, or an amount (450,000)."
    list_select_related = ("school", "student", "payment_request__student")
    actions = ("map_student", "clear_risk")  # the books app adds its retry action first (quickbooks_sync.admin)
    change_list_template = "admin/payments/payment/change_list.html"
    # The receipt is shown as a link to the staff-only download view, never as a media URL.
    readonly_fields = [f.name for f in Payment._meta.fields if f.name != "receipt"] + ["receipt_link"]
    change_form_template = "admin/payments/payment/change_form.html"

    @admin.display(description="Date", ordering="created_at")
    def date(self, obj):
        return school_time(obj.created_at, obj.school)

    @admin.display(description="Student", ordering="student__full_name")
    def student_name(self, obj):
        student = obj.student or (obj.payment_request.student if obj.payment_request_id else None)
        if student is not None:
            return student.full_name or student.student_number
        return f"Unknown ({obj.provider_student_id})" if obj.provider_student_id else "—"

    @admin.display(description="Amount", ordering="amount_minor")
    def amount(self, obj):
        return amount_cell(obj.amount_display)

    @admin.display(description="Status", ordering="status")
    def status_label(self, obj):
        return obj.get_status_display()

    @admin.display(description="Provider", ordering="provider")
    def provider_name(self, obj):
        return payment_how(obj)

    @admin.display(description="Risk", ordering="risk_score")
    def risk_display(self, obj):
        if obj.risk_score is None:
            return ""
        if not obj.risk_flagged:
            return str(obj.risk_score)
        state = "cleared" if obj.risk_cleared_at else ("held" if obj.risk_held else "high")
        reasons = "; ".join(reason.get("detail", "") for reason in obj.risk_reasons or [])
        return format_html('<strong title="{}">{} ({})</strong>', reasons, obj.risk_score, state)

    @admin.action(description="Clear the risk flag (let it reach the books)", permissions=["change"])
    def clear_risk(self, request, queryset):
        for payment in queryset:
            try:
                services.payment_risk_clear(payment_id=payment.pk, actor=request.user.get_username())
            except services.RiskClearRefused as exc:
                self.message_user(request, f"{payment}: {exc}", messages.WARNING)
            else:
                self.message_user(request, f"{payment}: cleared (score {payment.risk_score}).", messages.SUCCESS)

    @admin.display(description="Review")
    def review_link(self, obj):
        if obj.status == PaymentStatus.AWAITING_REVIEW:
            return format_html('<a href="{}">Review</a>', reverse("admin:payments_payment_review", args=[obj.pk]))
        if obj.student_id is None and obj.mapping_status in (MappingStatus.UNMATCHED, MappingStatus.FAILED):
            return format_html('<a href="{}">Map student</a>', reverse("admin:payments_payment_map", args=[obj.pk]))
        if obj.risk_flagged and not obj.risk_cleared_at:
            return self.risk_display(obj)  # score (high or held), its reasons on hover
        if obj.review_flag:
            return format_html('<span title="{}">{}</span>', obj.review_flag_reason, obj.get_review_flag_display())
        if obj.ledger_conflict:
            return "Reports disagree"
        return ""

    @admin.display(description="Receipt")
    def receipt_link(self, obj):
        if not obj.receipt:
            return "—"
        return format_html(
            '<a href="{}">Download ({})</a>',
            reverse("admin:payments_payment_receipt", args=[obj.pk]),
            obj.receipt_content_type,
        )

    def has_add_permission(self, request):
        return False  # payments come from providers and parents, never typed in

    def has_delete_permission(self, request, obj=None):
        return False  # money records are never deleted

    # The page shows every stored field, folded under "Details for engineers"; none is editable.
    fieldsets = (
        (
            "Details for engineers",
            {
                "classes": ("collapse",),
                "fields": [f.name for f in Payment._meta.fields if f.name != "receipt"] + ["receipt_link"],
            },
        ),
    )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "POST":
            # Read-only: a saved form would write every column back as loaded, over the
            # worker's concurrent changes. Staff act through the buttons (review, map, refund).
            return HttpResponseNotAllowed(["GET"])
        payment = self.get_object(request, object_id)
        extra = {"show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False}
        if payment is not None:
            extra["title"] = "Payment"
            extra["subtitle"] = f"{payment.amount_display} by {payment_how(payment)}"
            can_change = self.has_change_permission(request, payment)
            extra["can_map"] = payment.student_id is None and can_change
            extra["can_refund"] = payment.status in SETTLED_STATES and can_change
            extra["refunds"] = payment.refund_requests.order_by("created_at", "id")
            extra["summary"] = self.summary_rows(payment)
            extra["todo"] = self.todo_items(payment, can_change=can_change)
            extra["timeline"] = [
                {
                    "at": timeline_time(entry, payment),
                    "actor": entry.actor,
                    "words": self.timeline_words(entry, payment),
                    "details": entry.details,
                    "code": entry.what,
                }
                for entry in selectors.payment_timeline(payment=payment)
            ]
        return super().change_view(request, object_id, form_url, extra_context={**extra, **(extra_context or {})})

    # Extended by the books app (quickbooks_sync.admin), which knows where the payment is in
    # QuickBooks: payments does not.
    def summary_rows(self, payment: Payment) -> list[tuple[str, object]]:
        return payment_summary_rows(payment)

    def todo_items(self, payment: Payment, *, can_change: bool) -> list[tuple[str, str]]:
        return payment_todo(payment, can_change=can_change)

    def timeline_words(self, entry, payment: Payment) -> str:
        return timeline_words(entry, payment)

    @admin.action(description="Map the selected payment to a student by hand", permissions=["change"])
    def map_student(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one payment to map.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:payments_payment_map", args=[queryset.get().pk]))

    def get_urls(self):
        return [
            path("export/", self.admin_site.admin_view(self.export_view), name="payments_payment_export"),
            path("<uuid:object_id>/map/", self.admin_site.admin_view(self.map_view), name="payments_payment_map"),
            path(
                "<uuid:object_id>/review/", self.admin_site.admin_view(self.review_view), name="payments_payment_review"
            ),
            path(
                "<uuid:object_id>/refund/", self.admin_site.admin_view(self.refund_view), name="payments_payment_refund"
            ),
            path(
                "<uuid:object_id>/receipt/",
                self.admin_site.admin_view(self.receipt_view),
                name="payments_payment_receipt",
            ),
        ] + super().get_urls()

    def _payment_page_context(self, request, payment: Payment, *, title: str, form) -> dict:
        """The context of a payment's own pages (map, review) under the admin's layout."""
        return {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.model._meta,
            "original": payment,
            "payment": payment,
            "form": form,
        }

    def _payment_for_staff(self, request, object_id) -> Payment:
        return get_object_or_404(self.get_queryset(request).select_related("payment_request__student"), pk=object_id)

    def export_view(self, request: HttpRequest):
        """The list as filtered and searched on screen, as CSV (the query string is the list's)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            queryset = self.get_changelist_instance(request).get_queryset(request)
        except IncorrectLookupParameters:
            # What the list itself does with a filter value it cannot use.
            return HttpResponseRedirect(f"{reverse('admin:payments_payment_changelist')}?{ERROR_FLAG}=1")
        audit_record(
            action="payments.exported",
            actor_type=AuditLog.ActorType.STAFF,
            actor=request.user.get_username(),
            details={"filters": request.GET.urlencode()[:500]},
        )
        response = StreamingHttpResponse(payments_csv_pieces(queryset), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="payments.csv"'
        return response

    def map_view(self, request: HttpRequest, object_id):
        """Map a payment without a student by hand (``services.payment_student_assign``)."""
        payment = self._payment_for_staff(request, object_id)
        if not self.has_change_permission(request, payment):
            raise PermissionDenied
        form = MapStudentForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                student = services.payment_student_assign(
                    payment_id=payment.pk,
                    student_number=form.cleaned_data["student_number"],
                    full_name=form.cleaned_data["full_name"],
                    actor=request.user,
                )
            except services.MappingRefused as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(request, f"Payment mapped to {student}.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:payments_payment_change", args=[payment.pk]))
        context = self._payment_page_context(request, payment, title=f"Map {payment} to a student", form=form)
        return TemplateResponse(request, "admin/payments/payment/map.html", context, status=400 if form.errors else 200)

    def review_view(self, request: HttpRequest, object_id):
        """Confirm or reject a manual payment with a note (``services.manual_payment_review``)."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        payment = self._payment_for_staff(request, object_id)
        form = ReviewForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                services.manual_payment_review(
                    payment_id=payment.pk,
                    decision=form.cleaned_data["decision"],
                    note=form.cleaned_data["note"],
                    reviewer=request.user,
                )
            except services.ReviewError as exc:
                form.add_error(None, str(exc))
            else:
                payment.refresh_from_db()
                payment_request = payment.payment_request
                if form.cleaned_data["decision"] == "reject":
                    text = "Payment rejected."
                elif (
                    payment_request
                    and payment_request.status == PaymentRequest.Status.PAID
                    and payment_request.paid_payment_id == payment.pk
                ):
                    text = "Payment confirmed. The payment request is now paid."
                elif payment.review_flag:
                    text = f"Payment confirmed, but it did not settle the request: {payment.review_flag_reason}."
                else:
                    text = "Payment confirmed."
                self.message_user(request, text, messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:payments_payment_change", args=[payment.pk]))
        context = {
            **self._payment_page_context(
                request, payment, title=f"Review {payment.get_method_display().lower()} {payment.reference}", form=form
            ),
            "reviewable": payment.status == PaymentStatus.AWAITING_REVIEW,
            "receipt_url": reverse("admin:payments_payment_receipt", args=[payment.pk]) if payment.receipt else "",
            "receipt_is_image": payment.receipt_content_type.startswith("image/"),
        }
        return TemplateResponse(request, "admin/payments/payment/review.html", context)

    def refund_view(self, request: HttpRequest, object_id):
        """Refund a payment, in full or in part, with a reason (``services.refund_request_create``):
        through its provider's refund API, or recorded as made by hand where there is none."""
        payment = self._payment_for_staff(request, object_id)
        if not self.has_change_permission(request, payment):
            raise PermissionDenied
        balance = selectors.payment_refund_balance(payment=payment)
        left = format_minor(balance.left_minor, payment.currency)
        form = RefundForm(
            request.POST or None,
            currency=payment.currency,
            initial={"amount": left.split(" ", 1)[1], "form_key": uuid.uuid4().hex},
        )
        if request.method == "POST" and form.is_valid():
            try:
                started = services.refund_request_create(
                    payment_id=payment.pk,
                    amount_minor=form.cleaned_data["amount"],
                    reason=form.cleaned_data["reason"],
                    actor=request.user,
                    client_key=f"admin-{form.cleaned_data['form_key']}",
                )
            except services.RefundInvalid as exc:
                for name, message in exc.errors.items():
                    form.add_error(name if name in form.fields else None, message)
            except services.RefundRefused as exc:
                form.add_error(None, exc.detail)
            else:
                level, text = _refund_message(started, payment)
                self.message_user(request, text, level)
                return HttpResponseRedirect(reverse("admin:payments_payment_change", args=[payment.pk]))
        adapter = services.refund_adapter(payment=payment)
        context = {
            **self._payment_page_context(request, payment, title=f"Refund {payment}", form=form),
            "balance_rows": [
                (label, format_minor(minor, payment.currency))
                for label, minor in (
                    ("Received", balance.received_minor),
                    ("Refunded", balance.refunded_minor),
                    ("Charged back", balance.charged_back_minor),
                    ("Refunds on their way", balance.on_the_way_minor),
                )
                if minor or label == "Received"
            ],
            "left": left,
            "refundable": payment.status in SETTLED_STATES,
            "provider_name": adapter.display_name if adapter else "",
            "refunds": payment.refund_requests.order_by("created_at", "id"),
        }
        return TemplateResponse(
            request, "admin/payments/payment/refund.html", context, status=400 if form.errors else 200
        )

    def receipt_view(self, request: HttpRequest, object_id):
        """The uploaded receipt, to staff of the payment's school only (never a public URL)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        payment = self._payment_for_staff(request, object_id)
        if not payment.receipt:
            raise Http404("No receipt")
        try:
            # Streamed through this view from wherever it is stored (the bucket is private).
            handle, size = receipts.receipt_open(payment.receipt)
        except receipts.ReceiptMissing:
            raise Http404("The receipt file is missing from storage") from None
        except receipts.ReceiptStorageUnavailable as exc:
            return HttpResponse(str(exc), status=503, content_type="text/plain; charset=utf-8")
        response = FileResponse(handle, content_type=payment.receipt_content_type)
        response["Content-Length"] = str(size)
        response["Content-Disposition"] = (
            f'inline; filename="receipt-{payment.reference}.{payment.receipt.name.rsplit(".", 1)[-1]}"'
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = (
            "default-src 'none'; img-src 'self'; object-src 'self'; plugin-types application/pdf"
        )
        return response


def _refund_message(started, payment: Payment) -> tuple[int, str]:
    refund: RefundRequest = started.refund_request
    provider = selectors.provider_display_name(payment.provider)
    amount = refund.amount_display
    if not started.created:
        return messages.INFO, f"This refund of {amount} was already recorded ({refund.get_status_display().lower()})."
    if refund.method == RefundRequest.Method.MANUAL:
        return messages.SUCCESS, f"Refund of {amount} recorded as made by hand."
    if refund.status == RefundRequest.Status.SUCCEEDED:
        return messages.SUCCESS, f"{provider} refunded {amount}."
    if refund.status == RefundRequest.Status.SUBMITTED:
        return messages.SUCCESS, f"Refund of {amount} sent to {provider}: pending until {provider} confirms it."
    if refund.status == RefundRequest.Status.IN_DOUBT:
        return messages.WARNING, (
            f"{provider} did not answer ({refund.error}). The refund of {amount} may or may not have been made: "
            "see the refund's page before doing anything else."
        )
    return messages.ERROR, f"{provider} refused the refund of {amount}: {refund.error}"
