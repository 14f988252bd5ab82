"""The one rule that scopes Django admin to a staff user's schools.

Every admin of a school-owned model mixes in ``SchoolScopedAdmin``; a system check
(``payments.checks``) fails start-up if one does not, so a new admin cannot forget. The rule
itself is ``payments.selectors.schools_for_user``: superusers see every school, staff the
schools of their ``StaffMembership`` rows. Because lists, detail pages, change forms, exports and
actions all start from ``get_queryset``, scoping it scopes them all: an object of another school
is "not found", exactly like a deleted one, so its existence is not leaked either.
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import FieldDoesNotExist, PermissionDenied
from django.db.models import Model, QuerySet

from payments import selectors
from payments.models import School


def school_scope(queryset: QuerySet, *, user, school_path: str) -> QuerySet:
    """``queryset`` narrowed to the rows of the schools ``user`` may see. ``school_path`` is the
    lookup from the model to its school ("school", "account__school"; "" for School itself)."""
    return queryset.filter(selectors.user_schools_q(user=user, school_path=school_path))


def school_path_of(model: type[Model]) -> str | None:
    """How ``model`` reaches its school through a ``school`` field, or None (a model outside any
    school, or one reached another way: its admin sets ``school_path``)."""
    if model is School:
        return ""
    try:
        field = model._meta.get_field("school")
    except FieldDoesNotExist:  # not a school-owned model
        return None
    return "school" if field.related_model is School else None


class SchoolScopedAdmin(admin.ModelAdmin):
    """A ModelAdmin whose every queryset, choice list and new object is bound to the staff
    user's schools. ``school_path`` overrides the automatic lookup (``school_path_of``)."""

    school_path: str | None = None

    @classmethod
    def resolved_school_path(cls, model: type[Model]) -> str | None:
        return cls.school_path if cls.school_path is not None else school_path_of(model)

    def _path(self) -> str:
        path = self.resolved_school_path(self.model)
        if path is None:
            raise LookupError(f"{self.model.__name__} has no school: set school_path on {type(self).__name__}")
        return path

    def get_list_filter(self, request):
        return tuple(
            SchoolFilter if entry in ("school", "account__school") else entry
            for entry in super().get_list_filter(request)
        )

    def get_queryset(self, request):
        return school_scope(super().get_queryset(request), user=request.user, school_path=self._path())

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # A choice list never offers another school's rows (nor the school itself).
        related = db_field.related_model
        related_path = school_path_of(related)
        if related_path is not None and "queryset" not in kwargs:
            kwargs["queryset"] = school_scope(
                related._default_manager.all(), user=request.user, school_path=related_path
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_school_access(self, request, obj) -> bool:
        """Whether ``obj`` (saved or about to be) belongs to one of the user's schools."""
        path = self._path()
        school_id = obj.pk if path == "" else _school_id_of(obj, path)
        return school_id is None or selectors.user_can_access_school(user=request.user, school_id=school_id)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and (obj is None or self.has_school_access(request, obj))

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and (obj is None or self.has_school_access(request, obj))

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) and (obj is None or self.has_school_access(request, obj))

    def save_model(self, request, obj, form, change):
        # Belt and braces behind the scoped choice lists: a forged POST cannot place a row in
        # another school.
        if not self.has_school_access(request, obj):
            raise PermissionDenied("not your school")
        super().save_model(request, obj, form, change)


def _school_id_of(obj, path: str) -> int | None:
    *hops, last = path.split("__")
    for hop in hops:
        obj = getattr(obj, hop, None)
        if obj is None:
            return None
    return getattr(obj, f"{last}_id", None)


class SchoolFilter(admin.SimpleListFilter):
    """ "By school", offering only the user's own schools (the stock related-field filter would
    list every school's name)."""

    title = "school"
    parameter_name = "school"

    def __init__(self, request, params, model, model_admin):
        self.school_path = model_admin._path()
        super().__init__(request, params, model, model_admin)

    def lookups(self, request, model_admin):
        return [(str(school.pk), school.code) for school in selectors.schools_for_user(user=request.user)]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        if self.value() not in {value for value, _ in self.lookup_choices}:
            # Only the user's own schools can match; this also refuses numbers too long to be ids.
            return queryset.none()
        return queryset.filter(**{f"{self.school_path or 'pk'}_id" if self.school_path else "pk": self.value()})
