from django.urls import re_path

from webhooks.views import webhook_receive_view

urlpatterns = [
    # The provider slug is matched case-insensitively by the registry (/api/webhooks/SUREPAY).
    re_path(r"^(?P<provider>[A-Za-z0-9_-]+)/?$", webhook_receive_view, name="webhook-receive"),
    re_path(
        r"^(?P<provider>[A-Za-z0-9_-]+)/(?P<school_code>[A-Za-z0-9_-]+)/?$",
        webhook_receive_view,
        name="webhook-receive-school",
    ),
]
