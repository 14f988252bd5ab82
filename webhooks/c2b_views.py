"""Daraja's paybill (C2B) callbacks: validation, confirmation, and the answers of the Transaction
Status queries (result, timeout). Thin: each authenticates through ``webhooks.c2b`` and answers
in the JSON Daraja documents."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from core.client_ip import client_ip
from providers.errors import PayloadInvalid, PayloadMalformed, SignatureInvalid
from webhooks import c2b
from webhooks.services import AccountUnknown, IpNotAllowed
from webhooks.views import error_response

REFUSALS = {AccountUnknown: (401, "account_unknown"), SignatureInvalid: (401, "signature_invalid"),
            IpNotAllowed: (403, "ip_not_allowed")}  # fmt: skip
ACK = {"ResultCode": 0, "ResultDesc": "Accepted"}


@csrf_exempt
def c2b_view(request: HttpRequest, school_code: str, token: str, kind: str) -> JsonResponse:
    if request.method != "POST":
        response = error_response(405, "method_not_allowed", "Use POST")
        response["Allow"] = "POST"
        return response
    if len(request.body) > settings.WEBHOOK_MAX_BODY_BYTES:
        return error_response(413, "payload_too_large", f"Body larger than {settings.WEBHOOK_MAX_BODY_BYTES} bytes")
    remote_addr = client_ip(request.META)
    try:
        account = c2b.c2b_account(school_code=school_code, token=token, remote_addr=remote_addr)
        if kind == "validation":
            code, desc = c2b.c2b_validate(account=account, body=request.body)
            return JsonResponse({"ResultCode": code, "ResultDesc": desc})
        if kind == "confirmation":
            receipt = c2b.c2b_confirm(account=account, body=request.body, headers=request.headers, remote_addr=remote_addr)
            return JsonResponse({**ACK, "event_id": receipt.event_id, "status": receipt.status})
        if kind == "result":
            note = c2b.c2b_status_result_apply(account=account, body=request.body, token=request.GET.get("t", ""))
            return JsonResponse({**ACK, "result": note})
        # timeout: the query waited too long in Daraja's queue; the janitor asks again later.
        return JsonResponse(ACK)
    except tuple(REFUSALS) as exc:
        status, code = REFUSALS[type(exc)]
        return error_response(status, code, exc.detail)
    except (PayloadMalformed, PayloadInvalid) as exc:
        extra = {"errors": exc.errors} if isinstance(exc, PayloadInvalid) else {}
        return error_response(400, "invalid_payload" if extra else "malformed_json", exc.detail, **extra)
    except c2b.ResultRefused as exc:
        return error_response(400, "result_refused", exc.detail)
