from django.urls import path

from ops.views import healthz_view, metrics_view, readyz_view

urlpatterns = [
    path("healthz", healthz_view, name="healthz"),
    path("readyz", readyz_view, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]
