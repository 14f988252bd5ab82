from django.urls import re_path

from webhooks.c2b_views import c2b_view
from webhooks.views import webhook_receive_view

urlpatterns = [
    # M-Pesa paybill callbacks. Daraja refuses URLs naming M-Pesa or Safaricom, hence "c2b".
    re_path(
        r"^c2b/(?P<school_code>[A-Za-z0-9_-]+)/(?P<token>[0-9a-f]{64})/(?P<kind>validation|confirmation|result|timeout)/?$",
        c2b_view,
        name="webhook-c2b",
    ),
    # The provider slug is matched case-insensitively by the registry (/api/webhooks/SUREPAY).
    re_path(r"^(?P<provider>[A-Za-z0-9_-]+)/?$", webhook_receive_view, name="webhook-receive"),
    re_path(
        r"^(?P<provider>[A-Za-z0-9_-]+)/(?P<school_code>[A-Za-z0-9_-]+)/?$",
        webhook_receive_view,
        name="webhook-receive-school",
    ),
]
