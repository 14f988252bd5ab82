"""The REST API for school staff (token authentication), scoped to the caller's schools.
Thin: each view checks its input with a serializer and calls one service or selector."""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from payments import selectors, services
from payments.api.serializers import (
    CheckoutRequestSerializer,
    CheckoutResponseSerializer,
    ErrorSerializer,
    NoticeErrorSerializer,
    NoticeSendSerializer,
    NoticeSerializer,
    PaymentRequestCreateSerializer,
    PaymentRequestSerializer,
    PaymentSerializer,
    RefundCreateSerializer,
    RefundErrorSerializer,
    RefundRequestSerializer,
)
from payments.models import AuditLog, PaymentRequest, RefundRequest

# CheckoutRefused codes -> HTTP status.
REFUSAL_STATUS = {
    "request_paid": status.HTTP_409_CONFLICT,
    "request_closed": status.HTTP_409_CONFLICT,
    "another_checkout_in_progress": status.HTTP_409_CONFLICT,
    "checkout_in_progress": status.HTTP_409_CONFLICT,
    "provider_unknown": status.HTTP_400_BAD_REQUEST,
    "provider_unavailable": status.HTTP_400_BAD_REQUEST,
    "phone_invalid": status.HTTP_400_BAD_REQUEST,
    "email_required": status.HTTP_400_BAD_REQUEST,
    "email_invalid": status.HTTP_400_BAD_REQUEST,
}


def _error(http_status: int, code: str, detail: str, **extra) -> Response:
    return Response({"detail": detail, "code": code, **extra}, status=http_status)


class PaymentRequestListCreateView(generics.ListAPIView):
    serializer_class = PaymentRequestSerializer

    def get_queryset(self):
        queryset = selectors.payment_requests_for_user(user=self.request.user).order_by("-created_at", "-id")
        if request_status := self.request.query_params.get("status"):
            queryset = queryset.filter(status=request_status)
        if student := self.request.query_params.get("student_id"):
            queryset = queryset.filter(student__student_number=student)
        return queryset

    @extend_schema(
        parameters=[
            OpenApiParameter("status", enum=PaymentRequest.Status.values, required=False),
            OpenApiParameter("student_id", str, required=False),
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request=PaymentRequestCreateSerializer, responses={201: PaymentRequestSerializer})
    def post(self, request):
        data = PaymentRequestCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        schools = selectors.schools_for_user(user=request.user)
        if values.get("school"):
            school = schools.filter(code=values["school"].strip().lower()).first()
            if school is None:
                raise ValidationError({"school": ["Unknown school, or not one of yours."]})
        elif schools.count() == 1:
            school = schools.get()
        else:
            raise ValidationError({"school": ["You are staff of several schools: say which one."]})
        try:
            draft = services.payment_request_draft(
                school=school,
                student_number=values["student_id"],
                description=values["description"],
                amount=values.get("amount"),
                amount_minor=values.get("amount_minor"),
                currency=values.get("currency", ""),
                due_date=values.get("due_date"),
                parent_email=values.get("parent_email", ""),
                parent_phone=values.get("parent_phone", ""),
            )
        except services.PaymentRequestInvalid as exc:
            raise ValidationError({name: [message] for name, message in exc.errors.items()}) from exc
        payment_request = services.payment_request_create(school=school, draft=draft, actor=request.user)
        return Response(PaymentRequestSerializer(payment_request).data, status=status.HTTP_201_CREATED)


class PaymentRequestDetailView(generics.RetrieveAPIView):
    serializer_class = PaymentRequestSerializer

    def get_queryset(self):
        return selectors.payment_requests_for_user(user=self.request.user)


class PaymentRequestCheckoutView(APIView):
    @extend_schema(
        request=CheckoutRequestSerializer,
        responses={
            201: CheckoutResponseSerializer,
            200: OpenApiResponse(CheckoutResponseSerializer, description="A checkout already under way, reused."),
            400: ErrorSerializer,
            404: ErrorSerializer,
            409: OpenApiResponse(ErrorSerializer, description="Paid, closed, or another checkout under way."),
            502: OpenApiResponse(ErrorSerializer, description="The provider could not start the payment."),
        },
        summary="Start a checkout for a payment request",
        description="Creates the payment intent and asks the provider for a checkout. A second call while "
        "one is under way returns it again (200, `reused: true`) or is refused (409): one request is never "
        "paid twice by a double submission.",
    )
    def post(self, request, pk: int):
        payment_request = selectors.payment_requests_for_user(user=request.user).filter(pk=pk).first()
        if payment_request is None:
            return _error(404, "not_found", "No such payment request.")
        body = CheckoutRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        payer = {name: body.validated_data[name] for name in ("phone", "email") if body.validated_data.get(name)}
        try:
            started = services.payment_checkout_start(
                payment_request_id=payment_request.pk,
                provider=body.validated_data["provider"],
                payer=payer,
                actor_type=AuditLog.ActorType.STAFF,
                actor=request.user.get_username(),
            )
        except services.CheckoutRefused as exc:
            extra = {"payment_id": str(exc.payment.pk)} if exc.payment is not None else {}
            return _error(REFUSAL_STATUS.get(exc.code, 409), exc.code, exc.detail, **extra)
        except services.CheckoutFailed as exc:
            return _error(502, "provider_error", exc.detail, payment_id=str(exc.payment.pk))
        payment = started.payment
        payload = {
            "checkout_url": started.redirect_url or None,
            "payment_id": str(payment.pk),
            "status": payment.status,
            "reused": started.reused,
            "prompt_sent": started.prompt_sent,
            "thanks_url": settings.PUBLIC_BASE_URL + reverse("payment-thanks", args=[payment.pk]),
        }
        return Response(payload, status=status.HTTP_200_OK if started.reused else status.HTTP_201_CREATED)


class PaymentRequestCancelView(APIView):
    @extend_schema(request=None, responses={200: PaymentRequestSerializer, 404: ErrorSerializer, 409: ErrorSerializer})
    def post(self, request, pk: int):
        payment_request = selectors.payment_requests_for_user(user=request.user).filter(pk=pk).first()
        if payment_request is None:
            return _error(404, "not_found", "No such payment request.")
        try:
            payment_request = services.payment_request_cancel(payment_request_id=pk, actor=request.user)
        except services.PaymentRequestStateError as exc:
            return _error(409, "request_not_open", str(exc))
        return Response(PaymentRequestSerializer(payment_request).data)


# NoticeRefused codes -> HTTP status.
NOTICE_REFUSAL_STATUS = {
    "request_not_open": status.HTTP_409_CONFLICT,
    "idempotency_key_reused": status.HTTP_409_CONFLICT,
    "no_email": status.HTTP_400_BAD_REQUEST,
    "no_phone": status.HTTP_400_BAD_REQUEST,
    "idempotency_key_invalid": status.HTTP_400_BAD_REQUEST,
    "channel_invalid": status.HTTP_400_BAD_REQUEST,
}


class PaymentRequestSendView(APIView):
    @extend_schema(
        request=NoticeSendSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                location=OpenApiParameter.HEADER,
                required=False,
                description="Send the same key again (a retry after a lost answer) to get the same send back, never a second message.",
            )
        ],
        responses={
            202: OpenApiResponse(NoticeSerializer, description="Queued: the message goes out in the background."),
            200: OpenApiResponse(NoticeSerializer, description="The same Idempotency-Key again: the send already made."),
            400: OpenApiResponse(NoticeErrorSerializer, description="`no_email`, `no_phone`, or field errors."),
            404: ErrorSerializer,
            409: OpenApiResponse(NoticeErrorSerializer, description="`request_not_open`, `idempotency_key_reused`."),
        },
        summary="Send a payment request's pay link to the parent",
        description="Emails or texts (`channel`: `email` or `sms`) the pay link to the parent contact of the "
        "request. Each call without a key is a new message (a re-send); the message's state is in the answer "
        "(`queued`, then `sent`, `failed` or `in_doubt`).",
    )
    def post(self, request, pk: int):
        payment_request = selectors.payment_requests_for_user(user=request.user).filter(pk=pk).first()
        if payment_request is None:
            return _error(404, "not_found", "No such payment request.")
        body = NoticeSendSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            queued = services.payment_request_send(
                payment_request_id=payment_request.pk,
                channel=body.validated_data["channel"],
                actor_type=AuditLog.ActorType.STAFF,
                actor=request.user.get_username(),
                client_key=request.headers.get("Idempotency-Key", ""),
            )
        except services.NoticeRefused as exc:
            extra = {"notice": NoticeSerializer(exc.notice).data} if exc.notice is not None else {}
            return _error(NOTICE_REFUSAL_STATUS.get(exc.code, 409), exc.code, exc.detail, **extra)
        data = NoticeSerializer(queued.notice).data
        return Response(data, status=status.HTTP_202_ACCEPTED if queued.created else status.HTTP_200_OK)


class PaymentListView(generics.ListAPIView):
    serializer_class = PaymentSerializer

    def get_queryset(self):
        queryset = selectors.payments_for_user(user=self.request.user).order_by("-created_at")
        params = self.request.query_params
        if payment_status := params.get("status"):
            queryset = queryset.filter(status=payment_status)
        if payment_request := params.get("payment_request"):
            if not payment_request.isdigit():
                raise ValidationError({"payment_request": ["Must be a payment request id."]})
            queryset = queryset.filter(payment_request_id=int(payment_request))
        if review_flag := params.get("review_flag"):
            queryset = queryset.filter(review_flag=review_flag)
        if risk := params.get("risk"):
            if risk not in ("high", "held"):
                raise ValidationError({"risk": ["Must be high or held."]})
            queryset = queryset.filter(**({"risk_flagged": True} if risk == "high" else {"risk_held": True}))
        return queryset

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, required=False),
            OpenApiParameter("payment_request", int, required=False),
            OpenApiParameter("review_flag", enum=["amount_mismatch", "overpayment"], required=False),
            OpenApiParameter("risk", enum=["high", "held"], required=False),
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class PaymentDetailView(generics.RetrieveAPIView):
    serializer_class = PaymentSerializer

    def get_queryset(self):
        return selectors.payments_for_user(user=self.request.user)


class PaymentRefundsView(APIView):
    """A payment's refunds: list them, or make one."""

    @extend_schema(responses={200: RefundRequestSerializer(many=True), 404: ErrorSerializer}, summary="A payment's refunds")
    def get(self, request, pk):
        payment = selectors.payments_for_user(user=request.user).filter(pk=pk).first()
        if payment is None:
            return _error(404, "not_found", "No such payment.")
        refunds = payment.refund_requests.order_by("created_at", "id")
        return Response(RefundRequestSerializer(refunds, many=True).data)

    @extend_schema(
        request=RefundCreateSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                location=OpenApiParameter.HEADER,
                required=False,
                description="Send the same key again (a retry after a lost answer) to get the same refund back, never a second one.",
            )
        ],
        responses={
            201: OpenApiResponse(RefundRequestSerializer, description="Recorded; the provider took it (or it was recorded as made by hand)."),
            200: OpenApiResponse(RefundRequestSerializer, description="The same Idempotency-Key again: the refund already made."),
            202: OpenApiResponse(
                RefundRequestSerializer,
                description="Recorded, but the provider's answer was lost (`in_doubt`): it is sent again by itself only "
                "where the provider honours the idempotency key; otherwise staff check the provider's dashboard.",
            ),
            400: OpenApiResponse(description="Field errors, e.g. `{\"amount\": [\"...\"]}`."),
            404: ErrorSerializer,
            409: OpenApiResponse(
                RefundErrorSerializer,
                description="`refund_exceeds_balance`, `refund_in_progress`, `payment_not_refundable`, `payment_disputed`, "
                "`idempotency_key_reused`.",
            ),
            502: OpenApiResponse(RefundErrorSerializer, description="`provider_refused`: nothing was refunded."),
        },
        summary="Refund a payment (full or partial)",
        description="Records the refund, then asks the payment's provider to make it with an idempotency key. The "
        "refund counts in the payment's amounts once the provider confirms it (`refund_pending_amount_minor` "
        "meanwhile). Providers without a refund API (SurePay, M-Pesa, manual payments): the refund is recorded as "
        "made by hand, at once.",
    )
    def post(self, request, pk):
        payment = selectors.payments_for_user(user=request.user).filter(pk=pk).first()
        if payment is None:
            return _error(404, "not_found", "No such payment.")
        body = RefundCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            started = services.refund_request_create(
                payment_id=payment.pk,
                amount=body.validated_data.get("amount"),
                amount_minor=body.validated_data.get("amount_minor"),
                reason=body.validated_data["reason"],
                actor=request.user,
                client_key=request.headers.get("Idempotency-Key", ""),
            )
        except services.RefundInvalid as exc:
            raise ValidationError({name: [message] for name, message in exc.errors.items()}) from exc
        except services.RefundRefused as exc:
            extra = {"refund": RefundRequestSerializer(exc.refund_request).data} if exc.refund_request else {}
            return _error(409, exc.code, exc.detail, **extra)
        refund = started.refund_request
        data = RefundRequestSerializer(refund).data
        if not started.created:
            return Response(data, status=status.HTTP_200_OK)
        if refund.status == RefundRequest.Status.FAILED:
            provider = selectors.provider_display_name(payment.provider)
            return _error(502, "provider_refused", f"{provider} refused the refund: {refund.error}", refund=data)
        location = {"Location": reverse("api-refund", args=[refund.pk])}
        if refund.status == RefundRequest.Status.IN_DOUBT:
            return Response(data, status=status.HTTP_202_ACCEPTED, headers=location)
        return Response(data, status=status.HTTP_201_CREATED, headers=location)


class RefundDetailView(generics.RetrieveAPIView):
    serializer_class = RefundRequestSerializer

    def get_queryset(self):
        return selectors.refund_requests_for_user(user=self.request.user)
