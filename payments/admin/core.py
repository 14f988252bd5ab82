"""Schools, students, staff memberships and the audit log."""

from __future__ import annotations

from django.contrib import admin

from payments.admin.scoping import SchoolScopedAdmin
from payments.models import AuditLog, School, StaffMembership, Student


@admin.register(School)
class SchoolAdmin(SchoolScopedAdmin):
    list_display = ("code", "name", "currency", "time_zone", "active", "risk_threshold", "risk_hold_from_books")
    search_fields = ("code", "name")


@admin.register(StaffMembership)
class StaffMembershipAdmin(SchoolScopedAdmin):
    list_display = ("user", "school", "created_at")
    list_filter = ("school",)
    search_fields = ("user__username", "user__email", "school__code")
    autocomplete_fields = ("user",)


@admin.register(Student)
class StudentAdmin(SchoolScopedAdmin):
    list_display = ("student_number", "full_name", "school")
    search_fields = ("student_number", "full_name")

    def get_search_results(self, request, queryset, search_term):
        # The payment request form's autocomplete sends its chosen school (payments/admin.js):
        # only that school's students, within the user's own (get_queryset already scoped them).
        school = request.GET.get("school", "")
        if request.resolver_match and request.resolver_match.url_name == "autocomplete" and school:
            queryset = queryset.filter(school_id=int(school)) if school.isdigit() and len(school) < 12 else queryset.none()
        return super().get_search_results(request, queryset, search_term)


@admin.register(AuditLog)
class AuditLogAdmin(SchoolScopedAdmin):
    list_display = ("created_at", "action", "actor_type", "actor", "target_type", "target_id")
    list_filter = ("action", "actor_type")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
