from django.db import models


class FloorEvent(models.Model):
    """The one row the floor view inserts per request; the floor task reads it and marks it."""

    event_id = models.CharField(max_length=255)
    body = models.TextField()
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True)
