from django.urls import path

from payments import parent_views, views

urlpatterns = [
    path("", views.home_view, name="home"),
    path("pay/<str:token>/", views.pay_view, name="pay"),
    path("pay/<str:token>/checkout", views.pay_checkout_view, name="pay-checkout"),
    path("pay/<str:token>/abandon", views.pay_abandon_view, name="pay-abandon"),
    path("pay/<str:token>/manual", views.pay_manual_view, name="pay-manual"),
    path("payments/<uuid:payment_id>/thanks", views.payment_thanks_view, name="payment-thanks"),
    path("payments/<uuid:payment_id>/status", views.payment_status_view, name="payment-status"),
    path("receipts/<str:token>/", views.receipt_view, name="receipt"),
    path("receipts/<str:token>/receipt.pdf", views.receipt_pdf_view, name="receipt-pdf"),
    path("payments/simulate/<uuid:payment_id>", views.payment_simulate_view, name="payment-simulate"),
    # A parent's own history: ask for a link by email, then open it.
    path("parents/<slug:school_code>/", parent_views.parent_link_request_view, name="parent-link-request"),
    path("parents/history/<str:token>/", parent_views.parent_history_view, name="parent-history"),
]
