from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from dashboard.views import dashboard_view
from payments.views import not_found_view

# Plain pages for a parent who meets an error, never Django's technical ones.
handler404 = "payments.views.not_found_view"
handler500 = "payments.views.server_error_view"

urlpatterns = [
    # Before admin.site.urls, whose catch-all would take it for an app label.
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    # Staff bookmarks from before provider accounts had their own name keep working.
    re_path(
        r"^admin/payments/aggregatoraccount/(?P<rest>.*)$",
        RedirectView.as_view(url="/admin/payments/provideraccount/%(rest)s", permanent=True, query_string=True),
    ),
    path("admin/", admin.site.urls),
    path("api/webhooks/", include("webhooks.urls")),
    # Ops: /healthz, /readyz, /metrics (also answered by ops.middleware.ProbeMiddleware).
    path("", include("ops.urls")),
    # Parents pay: the staff REST API, and the parent pages.
    path("api/", include("payments.api.urls")),
    path("", include("payments.urls")),
    path("qbo/", include("quickbooks_sync.urls")),
    # Last: any other address is the plain 404 page, even with DEBUG on (the demo runs so).
    re_path(r"^(?!static/|media/).*$", not_found_view, name="not-found"),
]
