from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/webhooks/", include("webhooks.urls")),
    path("qbo/", include("quickbooks_sync.urls")),
]
