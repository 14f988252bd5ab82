"""The floor of the benchmark: a bare Django view that checks one HMAC and inserts one row.

Nothing else: no account look-up, no validation, no payment, no audit, no enqueue. The real
endpoint is measured against this in the same run, on the same server and database.
"""

import hashlib
import hmac
import json

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from bench.floor.models import FloorEvent

SECRET = b"sekret"


@csrf_exempt
def floor_view(request):
    body = request.body
    expected = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("X-Signature", "")):
        return JsonResponse({"detail": "bad signature"}, status=401)
    event_id = json.loads(body)["event_id"]
    FloorEvent.objects.create(event_id=event_id, body=body.decode())
    return JsonResponse({"detail": "Webhook accepted", "event_id": event_id, "status": "pending"}, status=202)
