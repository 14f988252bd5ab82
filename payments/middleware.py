"""Staff pages read times in their school's zone."""

from __future__ import annotations

from django.utils import timezone

from payments import selectors


class StaffTimeZoneMiddleware:
    """On admin pages, Django's current time zone is the user's schools' zone when they share
    one, so every time Django itself renders (read-only fields, date filters) is in school time.
    A user whose schools lie in several zones keeps the server's zone here; the lists and
    summaries then write each row's time in its own school's zone, with the zone's name."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if not request.path.startswith("/admin/") or not getattr(user, "is_staff", False):
            return self.get_response(request)
        name = selectors.staff_time_zone(user=user)
        if name is None:
            return self.get_response(request)
        timezone.activate(name)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
