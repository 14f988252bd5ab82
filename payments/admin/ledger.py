"""The facts a payment is folded from (payments.ledger), read-only: what each source said, and
what still waits for its payment."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from core.money import format_minor
from payments.admin.display import amount_cell, school_time
from payments.admin.filters import WaitingFilter
from payments.admin.scoping import SchoolScopedAdmin
from payments.models import TransactionFact


@admin.register(TransactionFact)
class TransactionFactAdmin(SchoolScopedAdmin):
    # Narrow enough for a laptop: the keys and ids are on the fact's page.
    list_display = ("occurred", "kind", "status", "amount", "source", "payment_link")
    list_display_links = ("occurred",)
    list_filter = (WaitingFilter, "kind", "source", "school")
    search_fields = ("txn_id", "reference", "key", "payment__external_txn_id", "payment__reference")
    list_select_related = ("school", "payment")
    readonly_fields = [field.name for field in TransactionFact._meta.fields]

    @admin.display(description="Amount")
    def amount(self, obj):
        return amount_cell(format_minor(obj.amount_minor, obj.currency)) if obj.amount_minor is not None else "—"

    @admin.display(description="Occurred", ordering="occurred_at")
    def occurred(self, obj):
        return school_time(obj.occurred_at, obj.school)

    @admin.display(description="Payment")
    def payment_link(self, obj):
        if obj.payment_id is None:
            return "Waiting for it"
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:payments_payment_change", args=[obj.payment_id]), obj.payment.amount_display
        )

    def has_add_permission(self, request):
        return False  # facts come from providers, staff decisions and the system, never typed in

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the ledger is append-only
