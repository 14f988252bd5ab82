from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import AllowAny

from payments.api import parents, views

urlpatterns = [
    path("payment-requests/", views.PaymentRequestListCreateView.as_view(), name="api-payment-requests"),
    path("payment-requests/<int:pk>/", views.PaymentRequestDetailView.as_view(), name="api-payment-request"),
    path("payment-requests/<int:pk>/checkout", views.PaymentRequestCheckoutView.as_view(), name="api-payment-request-checkout"),
    path("payment-requests/<int:pk>/cancel", views.PaymentRequestCancelView.as_view(), name="api-payment-request-cancel"),
    path("payment-requests/<int:pk>/send", views.PaymentRequestSendView.as_view(), name="api-payment-request-send"),
    path("payments/", views.PaymentListView.as_view(), name="api-payments"),
    path("payments/<uuid:pk>/", views.PaymentDetailView.as_view(), name="api-payment"),
    path("payments/<uuid:pk>/refunds", views.PaymentRefundsView.as_view(), name="api-payment-refunds"),
    path("refunds/<uuid:pk>/", views.RefundDetailView.as_view(), name="api-refund"),
    # A parent's own history, for the token of their magic link.
    path("parent/history/", parents.ParentHistoryView.as_view(), name="api-parent-history"),
    # The OpenAPI document and its docs page (Swagger UI from this service's static files).
    path("schema/", SpectacularAPIView.as_view(permission_classes=[AllowAny]), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file (?script), so the page needs no
    # inline script; Swagger UI still sets inline styles.
    path(
        "docs/",
        csp_update({"style-src": [UNSAFE_INLINE]})(
            SpectacularSwaggerSplitView.as_view(url_name="api-schema", permission_classes=[AllowAny])
        ),
        name="api-docs",
    ),
]
