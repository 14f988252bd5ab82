"""The webhook endpoint: read the body within the size limit, call the service, and map its
outcome to the ingestion contract's status codes and JSON bodies (in one table)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from config.metrics import webhook_answered
from core.client_ip import client_ip
from payments.models import WebhookEvent
from payments.ratelimits import RateLimited
from providers.errors import PayloadInvalid, PayloadMalformed, SignatureInvalid, SignatureMissing, UnknownProvider
from webhooks.services import AccountUnknown, IpNotAllowed, SchoolCodeMissing, webhook_receive

# exception class -> (HTTP status, error code). The detail comes from the exception.
ERROR_RESPONSES: dict[type[Exception], tuple[int, str]] = {
    UnknownProvider: (404, "unknown_provider"),
    SchoolCodeMissing: (401, "school_code_missing"),
    AccountUnknown: (401, "account_unknown"),
    IpNotAllowed: (403, "ip_not_allowed"),
    SignatureMissing: (401, "signature_missing"),
    SignatureInvalid: (401, "signature_invalid"),
    PayloadMalformed: (400, "malformed_json"),
    PayloadInvalid: (400, "invalid_payload"),
    RateLimited: (429, "too_many_failures"),
}


def error_response(status: int, code: str, detail: str, **extra) -> JsonResponse:
    response = JsonResponse({"detail": detail, "code": code, **extra}, status=status)
    response.outcome = code  # ops: the metrics label of this answer
    return response


# Ops: every answer is counted here, by provider and outcome (the error code, or
# accepted/duplicate): one cached counter increment, no I/O.
@csrf_exempt
def webhook_receive_view(request: HttpRequest, provider: str, school_code: str | None = None) -> JsonResponse:
    try:
        response = _webhook_receive(request, provider, school_code)
    except Exception:
        webhook_answered(provider, "server_error")
        raise
    webhook_answered(provider, getattr(response, "outcome", None) or _SUCCESS_OUTCOMES.get(response.status_code, "other"))
    return response


_SUCCESS_OUTCOMES = {202: "accepted", 200: "duplicate"}


def _webhook_receive(request: HttpRequest, provider: str, school_code: str | None) -> JsonResponse:
    if request.method != "POST":
        response = error_response(405, "method_not_allowed", "Use POST")
        response["Allow"] = "POST"
        return response
    limit = settings.WEBHOOK_MAX_BODY_BYTES
    declared = request.META.get("CONTENT_LENGTH") or "0"
    try:
        too_large = (declared.isdigit() and int(declared) > limit) or len(request.body) > limit
    except RequestDataTooBig:
        too_large = True
    if too_large:
        return error_response(413, "payload_too_large", f"Body larger than {limit} bytes")
    try:
        receipt = webhook_receive(
            provider_slug=provider,
            school_code=school_code or request.headers.get("X-School-Code"),
            body=request.body,
            headers=request.headers,
            query=request.GET.dict(),
            remote_addr=client_ip(request.META),
        )
    except tuple(ERROR_RESPONSES) as exc:
        status, code = ERROR_RESPONSES[type(exc)]
        extra = {"errors": exc.errors} if isinstance(exc, PayloadInvalid) else {}
        response = error_response(status, code, exc.detail, **extra)
        if isinstance(exc, RateLimited):
            response["Retry-After"] = str(exc.retry_after)
        return response
    if receipt.created and receipt.status == WebhookEvent.Status.IGNORED:
        # Stored, and nothing to do: a 2xx, so the provider stops retrying, with the reason.
        return JsonResponse(
            {"detail": "Webhook ignored", "event_id": receipt.event_id, "status": receipt.status, "reason": receipt.reason},
            status=200,
        )
    if receipt.created:
        return JsonResponse(
            {"detail": "Webhook accepted", "event_id": receipt.event_id, "status": receipt.status}, status=202
        )
    return JsonResponse(
        {"detail": "Duplicate webhook ignored", "event_id": receipt.event_id, "status": receipt.status}, status=200
    )
