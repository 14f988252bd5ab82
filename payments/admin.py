"""Staff admin. Secrets are never displayed; the audit log is read-only."""

from django.contrib import admin

from payments.models import AggregatorAccount, AuditLog, Payment, School, Student, WebhookEvent


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


@admin.register(Student)
class StudentAdmin(admin.ModelAdmin):
    list_display = ("student_number", "full_name", "school")
    search_fields = ("student_number", "full_name")


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
    list_display = ("created_at", "school", "provider", "external_txn_id", "amount_display", "status", "mapping_status", "student")
    list_filter = ("status", "provider", "mapping_status")
    search_fields = ("external_txn_id", "reference", "provider_student_id", "student__student_number")
    readonly_fields = [f.name for f in Payment._meta.fields]


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
