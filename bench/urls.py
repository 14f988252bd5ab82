from django.urls import path

from bench.floor.views import floor_queued_view, floor_view
from config.urls import urlpatterns as service_urlpatterns

# Under /api/webhooks/, so the floors take the webhook path's own middleware (config/wsgi.py),
# like the endpoint they are measured against. First, before the providers' catch-all route.
urlpatterns = [
    path("api/webhooks/bench-floor", floor_view),
    path("api/webhooks/bench-floor-queued", floor_queued_view),
    *service_urlpatterns,
]
