"""Staff admin. Secrets are never displayed; the audit log is read-only.

Issue 4 adds: payment requests (created one by one or from a CSV upload, cancelled by an
action), staff memberships, and on payments the manual-payment review page and the receipt
download. These views are scoped to the staff user's schools (``selectors.schools_for_user``);
scoping every other admin list is issue 6's.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from payments import selectors, services
from payments.forms import CsvImportForm, PaymentRequestAdminForm, ReviewForm
from payments.models import (
    AggregatorAccount,
    AuditLog,
    Payment,
    PaymentRequest,
    School,
    StaffMembership,
    Student,
    WebhookEvent,
)
from payments.state import PaymentStatus


@admin.register(School)
class SchoolAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "currency", "active")
    search_fields = ("code", "name")


@admin.register(AggregatorAccount)
class AggregatorAccountAdmin(admin.ModelAdmin):
    list_display = ("school", "provider", "test_mode", "active", "updated_at")
    list_filter = ("provider", "test_mode", "active")
    fields = ("school", "provider", "test_mode", "active", "ip_allowlist", "created_at", "updated_at")
    readonly_fields = ("created_at", "updated_at")


@admin.register(StaffMembership)
class StaffMembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "school", "created_at")
    list_filter = ("school",)
    search_fields = ("user__username", "user__email", "school__code")
    autocomplete_fields = ("user",)


@admin.register(Student)
class StudentAdmin(admin.ModelAdmin):
    list_display = ("student_number", "full_name", "school")
    search_fields = ("student_number", "full_name")


class PaymentInline(admin.TabularInline):
    model = Payment
    fk_name = "payment_request"
    fields = ("created_at", "provider", "method", "reference", "amount_display", "status", "review_flag")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(PaymentRequest)
class PaymentRequestAdmin(admin.ModelAdmin):
    form = PaymentRequestAdminForm
    list_display = ("created_at", "school", "student", "description", "amount_display", "due_date", "status")
    list_filter = ("status", "school")
    search_fields = ("student__student_number", "student__full_name", "description")
    date_hierarchy = "created_at"
    actions = ["cancel_requests"]
    inlines = [PaymentInline]
    change_list_template = "admin/payments/paymentrequest/change_list.html"

    def get_queryset(self, request):
        return super().get_queryset(request).filter(school__in=selectors.schools_for_user(user=request.user))

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []  # a new request has no payments

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        # What the parent is asked to pay never changes under them: cancel and create a new one.
        return ("school", "student", "amount_display", "status", "pay_link", "paid_payment", "paid_at", "created_by")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("school", "student_id", "description", "amount", "currency", "due_date")
        return ("pay_link", "school", "student", "description", "amount_display", "due_date", "status", "paid_payment", "paid_at", "created_by")

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is not None:
            kwargs["form"] = admin.ModelAdmin.form
            kwargs["fields"] = ("description", "due_date")
            return super().get_form(request, obj, change=change, **kwargs)
        form = super().get_form(request, obj, change=change, **kwargs)
        schools = selectors.schools_for_user(user=request.user)

        class ScopedForm(form):
            def __init__(self, *args, **kw):
                super().__init__(*args, schools=schools, **kw)

        return ScopedForm

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        created = services.payment_request_create(school=form.cleaned_data["school"], draft=form.draft, actor=request.user)
        obj.pk = created.pk
        obj.__dict__.update(created.__dict__)

    def save_related(self, request, form, formsets, change):
        if change:
            super().save_related(request, form, formsets, change)

    def has_delete_permission(self, request, obj=None):
        return False  # cancel instead: payments may point at the request

    @admin.display(description="Pay link")
    def pay_link(self, obj):
        return format_html('<a href="{0}" target="_blank" rel="noopener">{0}</a>', obj.pay_url)

    @admin.action(description="Cancel the selected open payment requests", permissions=["change"])
    def cancel_requests(self, request, queryset):
        cancelled = 0
        for payment_request in queryset.filter(status=PaymentRequest.Status.OPEN):
            services.payment_request_cancel(payment_request_id=payment_request.pk, actor=request.user)
            cancelled += 1
        self.message_user(request, f"Cancelled {cancelled} payment request(s).", messages.SUCCESS)

    def get_urls(self):
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="payments_paymentrequest_import"),
        ] + super().get_urls()

    def import_view(self, request: HttpRequest):
        """Bulk creation from a CSV file: every row is checked first; one error and nothing is saved."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        schools = selectors.schools_for_user(user=request.user)
        form = CsvImportForm(request.POST or None, request.FILES or None, schools=schools)
        result = None
        if request.method == "POST" and form.is_valid():
            result = services.payment_requests_import_csv(
                school=form.cleaned_data["school"], data=form.cleaned_data["file"].read(), actor=request.user
            )
            if not result.errors:
                self.message_user(
                    request, f"Imported {len(result.created)} payment request(s) for {form.cleaned_data['school']}.", messages.SUCCESS
                )
                return HttpResponseRedirect(reverse("admin:payments_paymentrequest_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import payment requests from CSV",
            "opts": self.model._meta,
            "form": form,
            "result": result,
            "columns": services.CSV_COLUMNS,
            "status": 400 if result and result.errors else 200,
        }
        return TemplateResponse(
            request, "admin/payments/paymentrequest/import.html", context, status=400 if result and result.errors else 200
        )


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
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
    search_fields = ("external_txn_id", "reference", "manual_reference", "provider_student_id", "student__student_number")
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
            '<a href="{}">Download ({})</a>', reverse("admin:payments_payment_receipt", args=[obj.pk]), obj.receipt_content_type
        )

    def get_urls(self):
        return [
            path("<uuid:object_id>/review/", self.admin_site.admin_view(self.review_view), name="payments_payment_review"),
            path("<uuid:object_id>/receipt/", self.admin_site.admin_view(self.receipt_view), name="payments_payment_receipt"),
        ] + super().get_urls()

    def _payment_for_staff(self, request, object_id) -> Payment:
        payment = get_object_or_404(Payment.objects.select_related("school", "payment_request__student"), pk=object_id)
        if not selectors.user_can_access_school(user=request.user, school_id=payment.school_id):
            raise Http404("No such payment")
        return payment

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
                elif payment_request and payment_request.status == PaymentRequest.Status.PAID and payment_request.paid_payment_id == payment.pk:
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
        response["Content-Disposition"] = f'inline; filename="receipt-{payment.reference}.{payment.receipt.name.rsplit(".", 1)[-1]}"'
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; object-src 'self'; plugin-types application/pdf"
        return response


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ("received_at", "provider", "external_event_id", "event_type", "status", "attempts")
    list_filter = ("status", "account__provider")
    search_fields = ("external_event_id",)
    readonly_fields = [f.name for f in WebhookEvent._meta.fields]


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    list_display = ("created_at", "action", "actor_type", "actor", "target_type", "target_id")
    list_filter = ("action", "actor_type")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
