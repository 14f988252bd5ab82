"""Staff admin of the QuickBooks sync: the connections page (health, connect, settings,
disconnect), the sync records with Intuit's message and a retry action. Tokens are never shown."""

from __future__ import annotations

from django.contrib import admin, messages
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html

from core.money import format_minor
from payments.admin.display import CachedValuesFilter, SchoolColumnForManySchools, amount_cell, school_time
from payments.admin.payments import PaymentAdmin
from payments.admin.scoping import SchoolScopedAdmin
from payments.models import Payment
from quickbooks_sync import selectors, services
from quickbooks_sync.models import QboAdjustmentSync, QboConnection, QboCustomer, QboPaymentSync, SyncStatus


@admin.register(QboConnection)
class QboConnectionAdmin(SchoolScopedAdmin):
    """The list page is an overview of every school: its connection's health and buttons."""

    fields = (
        "school", "status", "status_reason", "realm_id", "company_name", "home_currency", "multicurrency",
        "item_name", "deposit_account_name", "sync_since", "access_token_expires_at", "refresh_token_expires_at",
        "tokens_refreshed_at", "connected_at", "connected_by", "last_synced_at",
    )  # fmt: skip
    readonly_fields = tuple(f for f in fields if f != "sync_since")

    def has_add_permission(self, request):
        return False  # connections come from the OAuth flow

    def has_delete_permission(self, request, obj=None):
        return False  # "Disconnect" revokes at Intuit first

    def changelist_view(self, request, extra_context=None):
        rows = []
        for school in selectors.schools_for_overview(user=request.user):
            connection = getattr(school, "qbo_connection", None)
            rows.append(
                {
                    "school": school,
                    "connection": connection,
                    "health": selectors.connection_health(connection=connection) if connection else None,
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "QuickBooks Online",
            "rows": rows,
            "opts": self.model._meta,
            "can_change": request.user.has_perm("quickbooks_sync.change_qboconnection"),
            "payment_syncs_url": reverse("admin:quickbooks_sync_qbopaymentsync_changelist"),
        }
        return render(request, "quickbooks_sync/overview.html", context)


class SyncRecordAdmin(SchoolColumnForManySchools, SchoolScopedAdmin):
    list_filter = ("status", ("txn_type", CachedValuesFilter), "school")
    search_fields = ("payment__external_txn_id", "payment__reference", "txn_id", "payment__student__student_number")
    actions = ("retry_sync",)
    list_select_related = ("payment", "school")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # read-only; the retry action is the only way to act

    list_select_related = ("payment__student", "school")
    change_form_template = "admin/payments/subrecord_change_form.html"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def get_fieldsets(self, request, obj=None):
        return (("The record as stored (for engineers)", {"classes": ("collapse",), "fields": self.get_readonly_fields(request, obj)}),)

    @admin.display(description="Updated", ordering="updated_at")
    def updated(self, obj):
        return school_time(obj.updated_at, obj.school)

    @admin.display(description="Payment")
    def payment_link(self, obj):
        url = reverse("admin:payments_payment_change", args=[obj.payment_id])
        return format_html('<a href="{}">{}</a>', url, _payment_label(obj.payment))

    @admin.display(description="Amount", ordering="amount_minor")
    def amount(self, obj):
        return amount_cell(format_minor(obj.amount_minor, obj.currency))

    @admin.display(description="Status", ordering="status")
    def status_label(self, obj):
        return obj.get_status_display()

    @admin.display(description="In QuickBooks")
    def document(self, obj):
        if not obj.txn_id:
            return "—"
        url = selectors.qbo_document_url(txn_type=obj.txn_type, txn_id=obj.txn_id)
        text = f"{_document_name(obj.txn_type)} {obj.txn_id}"
        return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, text) if url else text

    @admin.display(description="Error")
    def error(self, obj):
        if not obj.last_error:
            return "—"
        short = obj.last_error if len(obj.last_error) <= 80 else obj.last_error[:79] + "…"
        return format_html('<span title="{}">{}</span>', obj.last_error[:1000], short)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        record = self.get_object(request, object_id)
        extra = {}
        if record is not None:
            extra = {
                "summary": self.summary_rows(record),
                "todo": self.todo_items(record),
                "title": str(record._meta.verbose_name).capitalize(),
                "subtitle": f"{record.payment.amount_display}, {_payment_label(record.payment)}",
            }
        return super().change_view(request, object_id, form_url, extra_context={**extra, **(extra_context or {})})

    def summary_rows(self, record) -> list[tuple[str, object]]:
        rows = [
            ("Payment", format_html('<a href="{}">{}, {}</a>', reverse("admin:payments_payment_change", args=[record.payment_id]),
                                    record.payment.amount_display, _payment_label(record.payment))),
            ("Amount sent", amount_cell(format_minor(record.amount_minor, record.currency))),
            ("Status", record.get_status_display()),
            ("In QuickBooks", self.document(record)),
            ("Date in QuickBooks", record.txn_date.strftime("%d %B %Y")),
            ("Attempts", str(record.attempts)),
            ("Updated", school_time(record.updated_at, record.school)),
        ]  # fmt: skip
        if record.last_error:
            rows.append(("QuickBooks said", record.last_error[:1000]))
        return rows

    def todo_items(self, record) -> list[tuple[str, str]]:
        if record.status == SyncStatus.FAILED:
            return [("Fix what QuickBooks refused, then select this record in the list and run "
                     "\"Retry the QuickBooks sync\"", reverse(f"admin:{record._meta.app_label}_{record._meta.model_name}_changelist"))]  # fmt: skip
        if record.status == SyncStatus.PAUSED:
            return [("Reconnect QuickBooks: the sync waits for it", reverse("admin:quickbooks_sync_qboconnection_changelist"))]
        return []

    def _retry(self, request, queryset) -> int:
        raise NotImplementedError

    @admin.action(description="Retry the QuickBooks sync of the selected failed records")
    def retry_sync(self, request, queryset):
        if not request.user.has_perm("quickbooks_sync.change_qboconnection"):
            self.message_user(request, "You may not retry QuickBooks syncs.", messages.ERROR)
            return
        failed = queryset.filter(status=SyncStatus.FAILED)
        retried = self._retry(request, failed)
        skipped = queryset.count() - retried
        self.message_user(request, f"{retried} sync(s) queued again.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"{skipped} record(s) were not retried: only failed records without a QuickBooks document can be.",
                messages.WARNING,
            )


@admin.register(QboPaymentSync)
class QboPaymentSyncAdmin(SyncRecordAdmin):
    list_display = ("updated", "payment_link", "amount", "status_label", "document", "error")

    def _retry(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True))
        return services.qbo_sync_retry(payment_sync_ids=ids, actor=request.user.get_username())


@admin.register(QboAdjustmentSync)
class QboAdjustmentSyncAdmin(SyncRecordAdmin):
    list_display = ("updated", "payment_link", "money", "amount", "status_label", "document", "error")

    @admin.display(description="Money", ordering="direction")
    def money(self, obj):
        return "Out" if obj.direction == QboAdjustmentSync.Direction.OUT else "In"

    def _retry(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True))
        return services.qbo_sync_retry(adjustment_sync_ids=ids, actor=request.user.get_username())


@admin.register(QboCustomer)
class QboCustomerAdmin(SchoolScopedAdmin):
    list_display = ("display_name", "customer_id", "student", "realm_id", "created_at")
    search_fields = ("display_name", "student__student_number", "customer_id")
    readonly_fields = ("school", "realm_id", "student", "customer_id", "display_name", "created_at")

    def has_add_permission(self, request):
        return False


# --- The payment list, as the books extend it -----------------------------------------------------
# Payments does not know QuickBooks exists: this app adds its filter and retry action to the payment
# admin by registering a subclass, as projects extend Django's UserAdmin.


class SyncStateFilter(admin.SimpleListFilter):
    title = "QuickBooks sync"
    parameter_name = "sync"

    def lookups(self, request, model_admin):
        return [(value, label) for value, (label, _) in selectors.PAYMENT_SYNC_STATES.items()]

    def queryset(self, request, queryset):
        state = selectors.PAYMENT_SYNC_STATES.get(self.value() or "")
        if self.value() is not None and state is None:
            return queryset.none()  # an unknown value shows nothing rather than everything
        return queryset.filter(state[1]) if state else queryset


def _filters_with_sync_state(filters: tuple) -> tuple:
    at = filters.index("mapping_status") + 1
    return (*filters[:at], SyncStateFilter, *filters[at:])


class PaymentWithBooksAdmin(PaymentAdmin):
    list_filter = _filters_with_sync_state(PaymentAdmin.list_filter)
    actions = ("retry_quickbooks_sync", *PaymentAdmin.actions)
    list_display = (*PaymentAdmin.list_display[:-1], "quickbooks", PaymentAdmin.list_display[-1])
    list_select_related = (*PaymentAdmin.list_select_related, "qbo_sync")

    @admin.display(description="QuickBooks")
    def quickbooks(self, obj: Payment) -> str:
        sync = getattr(obj, "qbo_sync", None)
        if sync is None:
            return "Not sent"
        return {
            SyncStatus.SYNCED: "In QuickBooks",
            SyncStatus.PENDING: "Waiting",
            SyncStatus.PAUSED: "Paused",
            SyncStatus.FAILED: "Failed",
        }.get(sync.status, sync.get_status_display())

    def summary_rows(self, payment):
        return [*super().summary_rows(payment), ("QuickBooks", payment_books_text(payment))]

    def todo_items(self, payment, *, can_change):
        todo = super().todo_items(payment, can_change=can_change)
        sync = getattr(payment, "qbo_sync", None)
        if sync is not None and sync.status == SyncStatus.FAILED:
            todo.append((f"QuickBooks refused it: {sync.last_error[:300]}. Fix that in QuickBooks, then retry "
                         "the sync (payments list: select it, action \"Retry the QuickBooks sync\")", ""))  # fmt: skip
        if sync is not None and sync.status == SyncStatus.PAUSED:
            todo.append(("Reconnect QuickBooks: the sync waits for it", reverse("admin:quickbooks_sync_qboconnection_changelist")))
        return todo

    def timeline_words(self, entry, payment):
        details = entry.details or {}
        if entry.what == "qbo.synced":
            invoices = ", ".join(str(a.get("doc_number") or a.get("invoice_id")) for a in details.get("applied") or [])
            document = f"{_document_name(details.get('txn_type', ''))} {details.get('txn_id', '')}".strip()
            return f"Recorded in QuickBooks as {document}" + (f" on invoice {invoices}" if invoices else "")
        if entry.what == "qbo.amount_mismatch":
            return f"QuickBooks recorded {details.get('recorded', 'a different amount')}, not the payment's amount"
        if entry.what == "qbo.sync_failed":
            return f"QuickBooks sync failed: {details.get('error', '')}".rstrip(": ")
        if entry.what == "qbo.sync_retry":
            return f"QuickBooks sync retried by {entry.actor or 'staff'}"
        if entry.what == "qbo.duplicate_found":
            return "Found already in QuickBooks (not recorded twice)"
        return super().timeline_words(entry, payment)

    @admin.action(description="Retry the QuickBooks sync of the selected payments", permissions=["change"])
    def retry_quickbooks_sync(self, request, queryset):
        outcomes: dict[str, int] = {}
        for payment_id in queryset.values_list("pk", flat=True):
            status = services.qbo_sync_request(payment_id=payment_id, requested_by=request.user.get_username())
            outcomes[status or "not ready"] = outcomes.get(status or "not ready", 0) + 1
        if not outcomes:
            self.message_user(request, "No payment was retried.", messages.WARNING)
            return
        self.message_user(
            request,
            "QuickBooks sync: " + ", ".join(f"{n} {status}" for status, n in sorted(outcomes.items())),
            messages.INFO,
        )
        if outcomes.get("not ready"):
            self.message_user(
                request,
                "'Not ready': a payment reaches QuickBooks once it has succeeded and is mapped to a student, "
                "and its school is connected to QuickBooks.",
                messages.WARNING,
            )


def _payment_label(payment) -> str:
    student = payment.student
    if student is not None:
        return student.full_name or student.student_number
    return payment.reference or payment.external_txn_id or str(payment.pk)


def _document_name(txn_type: str) -> str:
    return {"Payment": "payment", "RefundReceipt": "refund receipt", "SalesReceipt": "sales receipt"}.get(
        txn_type, txn_type
    )


def payment_books_text(payment):
    """Where the payment is in QuickBooks, with a link to the document there."""
    sync = getattr(payment, "qbo_sync", None)
    if sync is None:
        return "Not sent (it goes once it has succeeded and its student is known)"
    admin_link = reverse("admin:quickbooks_sync_qbopaymentsync_change", args=[sync.pk])
    if sync.status != SyncStatus.SYNCED:
        return format_html('<a href="{}">{}</a>{}', admin_link, sync.get_status_display(),
                           f": {sync.last_error[:200]}" if sync.last_error else "")  # fmt: skip
    document = f"{_document_name(sync.txn_type)} {sync.txn_id}"
    invoices = ", ".join(str(a.get("doc_number") or a.get("invoice_id")) for a in sync.details.get("applied") or [])
    url = selectors.qbo_document_url(txn_type=sync.txn_type, txn_id=sync.txn_id)
    return format_html(
        'Recorded as <a href="{}" target="_blank" rel="noopener">{}</a>{} (<a href="{}">sync record</a>)',
        url or admin_link, document, f" on invoice {invoices}" if invoices else "", admin_link,
    )  # fmt: skip


admin.site.unregister(Payment)
admin.site.register(Payment, PaymentWithBooksAdmin)
