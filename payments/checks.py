"""Start-up check: no admin of a school-owned model may skip the school scoping."""

from __future__ import annotations

from django.contrib import admin
from django.core import checks

from payments.admin.scoping import SchoolScopedAdmin

# Our apps: their admins show school data. (auth's User and Group admins are superuser-only:
# the staff group has no permission on them.)
SCOPED_APPS = ("payments", "quickbooks_sync")


@checks.register(checks.Tags.admin)
def admin_school_scoping_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    errors = []
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in SCOPED_APPS:
            continue
        name = f"{type(model_admin).__module__}.{type(model_admin).__name__}"
        if not isinstance(model_admin, SchoolScopedAdmin):
            errors.append(
                checks.Error(
                    f"{name} shows {model.__name__} rows without the school scoping",
                    hint="Subclass payments.admin.scoping.SchoolScopedAdmin.",
                    obj=type(model_admin),
                    id="payments.E001",
                )
            )
        elif type(model_admin).resolved_school_path(model) is None:
            errors.append(
                checks.Error(
                    f"{name}: {model.__name__} has no 'school' field",
                    hint="Set school_path to the lookup from the model to its school.",
                    obj=type(model_admin),
                    id="payments.E002",
                )
            )
    return errors
