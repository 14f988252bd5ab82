from rest_framework.permissions import BasePermission

from payments.selectors import schools_for_user


class IsSchoolStaff(BasePermission):
    """An active staff user of at least one school (or a superuser). What they see is then
    scoped to their schools by the views' querysets (``payments.selectors``)."""

    message = "Only school staff may use this API."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(
            user
            and user.is_authenticated
            and user.is_active
            and user.is_staff
            and (user.is_superuser or schools_for_user(user=user).exists())
        )
