"""The facts a payment is folded from (payments.ledger), read-only: what each source said, and
what still waits for its payment."""

from __future__ import annotations

from django.contrib import admin

from core.money import format_minor
from payments.admin.filters import WaitingFilter
from payments.admin.scoping import SchoolScopedAdmin
from payments.models import TransactionFact


@admin.register(TransactionFact)
class TransactionFactAdmin(SchoolScopedAdmin):
    list_display = ("occurred_at", "school", "kind", "key", "status", "amount", "source", "payment", "txn_id", "reference")
    list_filter = (WaitingFilter, "kind", "source", "school")
    search_fields = ("txn_id", "reference", "key", "payment__external_txn_id", "payment__reference")
    list_select_related = ("school", "payment")
    readonly_fields = [field.name for field in TransactionFact._meta.fields]

    @admin.display(description="Amount")
    def amount(self, obj):
        return format_minor(obj.amount_minor, obj.currency) if obj.amount_minor is not None else "—"

    def has_add_permission(self, request):
        return False  # facts come from providers, staff decisions and the system, never typed in

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the ledger is append-only
