"""Request guards: input no view can use is answered 400 here, once, before it reaches a query.

- A NUL in the path or the query string: PostgreSQL refuses NUL in text, so any look-up with
  it (``/pay/%00/``, ``?status=%00``, an admin list filter) would fail as a server error.
- An admin action's selected ids that are not ids of that model (``_selected_action=abc``):
  Django filters ``pk__in`` with them as they come and fails in the database.

Both cost a substring test or two per request; the webhook path pays only the first.
"""

from __future__ import annotations

from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse


def bad_request(request: HttpRequest, detail: str) -> HttpResponse:
    if request.path_info.startswith("/api/"):
        return JsonResponse({"detail": detail, "code": "bad_request"}, status=400)
    return HttpResponse(detail, status=400, content_type="text/plain; charset=utf-8")


class RequestGuardMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        if "\x00" in request.path_info or "%00" in query or "\x00" in query:
            return bad_request(request, "The address contains a NUL character.")
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        # Admin views carry their ModelAdmin (django.contrib.admin.options.ModelAdmin.get_urls).
        model_admin = getattr(view_func, "model_admin", None)
        if model_admin is None or request.method != "POST" or ACTION_CHECKBOX_NAME not in request.POST:
            return None
        pk = model_admin.model._meta.pk
        for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
            try:
                if "\x00" in value:
                    raise ValidationError("NUL")
                pk.get_prep_value(pk.to_python(value))
            except (ValidationError, ValueError, TypeError, OverflowError):
                return bad_request(request, "The selection names something that is not one of these objects.")
        return None
