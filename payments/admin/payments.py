"""Payments: filters, search, the timeline, staff actions, CSV export, manual-payment review and receipts."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from payments import services
from payments.admin.scoping import SchoolScopedAdmin
from payments.forms import ReviewForm
from payments.models import Payment, PaymentRequest
from payments.state import PaymentStatus


@admin.register(Payment)
class PaymentAdmin(SchoolScopedAdmin):
    list_display = (
        "created_at",
        "school",
        "provider",
        "method",
        "external_txn_id",
        "amount_display",
        "status",
        "review_flag",
        "mapping_status",
        "student",
        "review_link",
    )
    list_filter = ("status", "provider", "method", "review_flag", "mapping_status")
    search_fields = (
        "external_txn_id",
        "reference",
        "manual_reference",
        "provider_student_id",
        "student__student_number",
    )
    # The receipt is shown as a link to the staff-only download view, never as a media URL.
    readonly_fields = [f.name for f in Payment._meta.fields if f.name != "receipt"] + ["receipt_link"]
    exclude = ("receipt",)
    change_form_template = "admin/payments/payment/change_form.html"

    @admin.display(description="Review")
    def review_link(self, obj):
        if obj.status != PaymentStatus.AWAITING_REVIEW:
            return ""
        return format_html('<a href="{}">Review</a>', reverse("admin:payments_payment_review", args=[obj.pk]))

    @admin.display(description="Receipt")
    def receipt_link(self, obj):
        if not obj.receipt:
            return "—"
        return format_html(
            '<a href="{}">Download ({})</a>',
            reverse("admin:payments_payment_receipt", args=[obj.pk]),
            obj.receipt_content_type,
        )

    def get_urls(self):
        return [
            path(
                "<uuid:object_id>/review/", self.admin_site.admin_view(self.review_view), name="payments_payment_review"
            ),
            path(
                "<uuid:object_id>/receipt/",
                self.admin_site.admin_view(self.receipt_view),
                name="payments_payment_receipt",
            ),
        ] + super().get_urls()

    def _payment_for_staff(self, request, object_id) -> Payment:
        return get_object_or_404(self.get_queryset(request).select_related("payment_request__student"), pk=object_id)

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
            **self.admin_site.each_context(request),
            "title": f"Review {payment.get_method_display().lower()} {payment.reference}",
            "opts": self.model._meta,
            "original": payment,
            "payment": payment,
            "form": form,
            "reviewable": payment.status == PaymentStatus.AWAITING_REVIEW,
            "receipt_url": reverse("admin:payments_payment_receipt", args=[payment.pk]) if payment.receipt else "",
            "receipt_is_image": payment.receipt_content_type.startswith("image/"),
        }
        return TemplateResponse(request, "admin/payments/payment/review.html", context)

    def receipt_view(self, request: HttpRequest, object_id):
        """The uploaded receipt, to staff of the payment's school only (never a public URL)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        payment = self._payment_for_staff(request, object_id)
        if not payment.receipt:
            raise Http404("No receipt")
        response = FileResponse(payment.receipt.open("rb"), content_type=payment.receipt_content_type)
        response["Content-Disposition"] = (
            f'inline; filename="receipt-{payment.reference}.{payment.receipt.name.rsplit(".", 1)[-1]}"'
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = (
            "default-src 'none'; img-src 'self'; object-src 'self'; plugin-types application/pdf"
        )
        return response
