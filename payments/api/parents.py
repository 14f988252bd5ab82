"""The REST API's view of a parent's own history: the same as the magic link's page, for the
link's token (``Authorization: Parent <token>``), and nothing else."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.urls import reverse
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core.money import format_minor
from payments import selectors
from payments.models import ParentAccessLink
from payments.services import parents as parent_services

SCHEME = "Parent"


def _refusal(code: str, detail: str) -> Response:
    response = Response({"detail": detail, "code": code}, status=401)
    response["WWW-Authenticate"] = SCHEME
    return response


class ParentLinkAuthentication(BaseAuthentication):
    """``Authorization: Parent <token>``: the token of a parent's magic link, never a cookie. It
    authenticates no user; the view looks the link up (``request.auth`` is the token)."""

    def authenticate(self, request):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != SCHEME or not token.strip():
            return None
        return AnonymousUser(), token.strip()

    def authenticate_header(self, request) -> str:
        return SCHEME


class ParentLinkScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme of the parent's link token."""

    target_class = ParentLinkAuthentication
    name = "parentLinkAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": 'The token of a parent\'s magic link, with the prefix "Parent"'}  # fmt: skip


class ParentHistoryView(APIView):
    # No staff token and no session here: the parent's link token is the only credential.
    authentication_classes = [ParentLinkAuthentication]
    permission_classes = [AllowAny]

    @extend_schema(operation_id="parent_history", responses={200: dict})
    def get(self, request):
        token = request.auth if isinstance(request.auth, str) else ""
        if not token:
            return _refusal("parent_token_missing", f"Send Authorization: {SCHEME} <the token of your link>")
        link = parent_services.parent_link_for_token(token=token)
        if link is None:
            expired = ParentAccessLink.objects.filter(token_digest=parent_services.token_digest(token[:100])).exists()
            if expired:
                return _refusal("parent_token_expired", "This link has expired: ask for a new one")
            return _refusal("parent_token_invalid", "Unknown token")
        history = selectors.parent_history(school=link.school, contact=link.contact)
        return Response({
            "school": {"code": history.school.code, "name": history.school.name},
            "expires_at": link.expires_at.isoformat(),
            "students": [{"student_id": s.student_number, "name": s.full_name} for s in history.students],
            "payment_requests": [
                {"id": r.pk, "student_id": r.student.student_number, "description": r.description,
                 "amount_minor": r.amount_minor, "currency": r.currency, "amount_display": r.amount_display,
                 "status": r.status, "due_date": r.due_date.isoformat() if r.due_date else None,
                 "pay_url": request.build_absolute_uri(reverse("pay", args=[r.token])) if r.status == "open" else None}
                for r in history.requests
            ],
            "payments": [
                {"id": str(p.pk), "payment_request_id": p.payment_request_id,
                 "student_id": p.student.student_number if p.student else None, "provider": p.provider,
                 "method": p.method, "reference": p.reference, "amount_minor": p.amount_minor, "currency": p.currency,
                 "amount_display": format_minor(p.amount_minor, p.currency),
                 "refunded_amount_minor": p.refunded_amount_minor, "status": p.status,
                 "created_at": p.created_at.isoformat(),
                 "receipt_url": request.build_absolute_uri(reverse("payment-thanks", args=[p.pk]))}
                for p in history.payments
            ],
        })  # fmt: skip
