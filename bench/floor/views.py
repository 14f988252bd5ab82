"""The floors of the benchmarks: bare Django views that check one HMAC and insert one row.

Nothing else: no account look-up, no validation, no payment, no audit. The real endpoint is
measured against ``floor_view`` in the same run, on the same server and database;
``floor_queued_view`` also publishes the row's id to the bare floor task the way the real
endpoint publishes its events (batched, after commit), for the worker latency floor.
"""

import hashlib
import hmac
import json

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from bench.floor.models import FloorEvent
from config.celery import BatchPublisher

SECRET = b"sekret"

FLOOR_PUBLISHER = BatchPublisher("bench.floor.tasks.floor_events_process")


def _store(request):
    body = request.body
    expected = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("X-Signature", "")):
        return None, JsonResponse({"detail": "bad signature"}, status=401)
    event_id = json.loads(body)["event_id"]
    return FloorEvent.objects.create(event_id=event_id, body=body.decode()), None


@csrf_exempt
def floor_view(request):
    event, refused = _store(request)
    if refused:
        return refused
    return JsonResponse({"detail": "Webhook accepted", "event_id": event.event_id, "status": "pending"}, status=202)


@csrf_exempt
def floor_queued_view(request):
    event, refused = _store(request)
    if refused:
        return refused
    FLOOR_PUBLISHER.add(event.pk)
    return JsonResponse({"detail": "Webhook accepted", "event_id": event.event_id, "status": "pending"}, status=202)
