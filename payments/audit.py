"""The audit log's writes: one entry per thing done, append-only (``AuditLog``)."""

from __future__ import annotations

import logging
from typing import Any

from payments.models import (
    AuditLog,
)

logger = logging.getLogger(__name__)

def audit_entry(
    *,
    action: str,
    actor_type: str,
    actor: str = "",
    school_id: int | None = None,
    target: Any = None,
    details: dict[str, Any] | None = None,
) -> AuditLog:
    """An unsaved audit entry, for callers that write several rows in one insert."""
    return AuditLog(
        action=action,
        actor_type=actor_type,
        actor=actor[:150],
        school_id=school_id,
        target_type=type(target).__name__ if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        details=details or {},
    )


def audit_record(**kwargs) -> AuditLog:
    entry = audit_entry(**kwargs)
    entry.save()
    return entry
