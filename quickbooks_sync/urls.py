from django.urls import path

from quickbooks_sync import views

app_name = "qbo"

urlpatterns = [
    # The redirect URI registered with Intuit (QBO_REDIRECT_URI).
    path("callback/", views.callback, name="callback"),
    path("<slug:school_code>/connect/", views.connect, name="connect"),
    path("<slug:school_code>/setup/", views.setup, name="setup"),
    path("<slug:school_code>/disconnect/", views.disconnect, name="disconnect"),
    path("<slug:school_code>/sync/", views.sync_now, name="sync"),
]
