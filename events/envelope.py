"""What is published for an outbox row: one JSON envelope, the same on every sink
(docs/events.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from payments.models import OutboxEvent


@dataclass(frozen=True)
class Envelope:
    outbox_id: int
    event_id: str
    event_type: str
    version: int
    school_id: int | None
    key: str
    document: dict[str, Any]

    @property
    def body(self) -> bytes:
        # Compact and with keys in a fixed order: the bytes signed are the bytes sent.
        return json.dumps(self.document, separators=(",", ":"), sort_keys=True).encode()


def envelope_of(row: OutboxEvent, *, extra: dict[str, Any] | None = None) -> Envelope:
    data = {**row.payload, **(extra or {})}
    return Envelope(
        outbox_id=row.pk,
        event_id=str(row.event_id),
        event_type=row.event_type,
        version=row.version,
        school_id=row.school_id,
        key=row.key,
        document={
            "id": str(row.event_id),
            "type": row.event_type,
            "version": row.version,
            "timestamp": row.created_at.isoformat(),
            "data": data,
        },
    )
