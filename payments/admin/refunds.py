"""Staff refunds: the list, each refund's page, and resolving one whose provider answer was lost."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from payments import selectors, services
from payments.admin.display import amount_cell, payment_how, school_time
from payments.admin.scoping import SchoolScopedAdmin
from payments.forms import RefundResolveForm
from payments.models import RefundRequest


@admin.register(RefundRequest)
class RefundRequestAdmin(SchoolScopedAdmin):
    # Narrow enough for a laptop beside the filters: the provider's refund id is on the refund's page.
    list_display = ("created", "payment_link", "amount", "status", "how", "by")
    list_display_links = ("created",)
    list_filter = ("status", "method", "school")
    search_fields = ("provider_refund_id", "payment__reference", "payment__external_txn_id", "reason")
    list_select_related = ("school", "payment")
    readonly_fields = [field.name for field in RefundRequest._meta.fields] + ["amount_display", "payment_link"]
    actions = ("ask_the_provider",)
    change_form_template = "admin/payments/refundrequest/change_form.html"

    @admin.display(description="Payment")
    def payment_link(self, obj):
        payment = obj.payment
        return format_html(
            '<a href="{}">{} by {}</a>',
            reverse("admin:payments_payment_change", args=[obj.payment_id]),
            amount_cell(payment.amount_display),
            payment_how(payment),
        )

    @admin.display(description="How", ordering="method")
    def how(self, obj):
        return "By hand" if obj.method == RefundRequest.Method.MANUAL else selectors.provider_display_name(obj.payment.provider)

    @admin.display(description="By", ordering="requested_by_name")
    def by(self, obj):
        return obj.requested_by_name or "—"

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj):
        return school_time(obj.created_at, obj.school)

    @admin.display(description="Amount", ordering="amount_minor")
    def amount(self, obj):
        return amount_cell(obj.amount_display)

    def has_add_permission(self, request):
        return False  # refunds start from their payment's page (or the API)

    def has_delete_permission(self, request, obj=None):
        return False  # money records are never deleted

    def get_urls(self):
        return [
            path(
                "<uuid:object_id>/resolve/",
                self.admin_site.admin_view(self.resolve_view),
                name="payments_refundrequest_resolve",
            )
        ] + super().get_urls()

    @admin.action(description="Ask the provider where the selected refunds stand", permissions=["change"])
    def ask_the_provider(self, request, queryset):
        answers = []
        for refund in queryset.filter(status=RefundRequest.Status.SUBMITTED):
            answers.append(f"{refund.amount_display}: {services.refund_request_recheck(refund_request_id=refund.pk)}")
        if not answers:
            self.message_user(request, "Only refunds the provider is still processing can be asked about.", messages.WARNING)
            return
        self.message_user(request, "; ".join(answers), messages.INFO)

    def resolve_view(self, request: HttpRequest, object_id):
        """A refund whose provider answer was lost: staff check the provider's dashboard, then
        release it or send it again (``services.refund_request_resolve``)."""
        refund = get_object_or_404(self.get_queryset(request).select_related("payment"), pk=object_id)
        if not self.has_change_permission(request, refund):
            raise PermissionDenied
        form = RefundResolveForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                refund = services.refund_request_resolve(
                    refund_request_id=refund.pk,
                    decision=form.cleaned_data["decision"],
                    note=form.cleaned_data["note"],
                    actor=request.user,
                )
            except services.RefundInvalid as exc:
                for name, message in exc.errors.items():
                    form.add_error(name if name in form.fields else None, message)
            except services.RefundRefused as exc:
                form.add_error(None, exc.detail)
            else:
                self.message_user(request, f"Refund {refund.get_status_display().lower()}.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:payments_refundrequest_change", args=[refund.pk]))
        adapter = services.refund_adapter(payment=refund.payment)  # None: refunded by hand
        context = {
            **self.admin_site.each_context(request),
            "title": f"Resolve {refund}",
            "opts": self.model._meta,
            "original": refund,
            "refund": refund,
            "form": form,
            "provider_name": selectors.provider_display_name(refund.payment.provider),
            "idempotent": adapter is not None and adapter.refund_idempotent,
        }
        return TemplateResponse(
            request, "admin/payments/refundrequest/resolve.html", context, status=400 if form.errors else 200
        )
