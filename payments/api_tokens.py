"""API tokens: made here, stored hashed (django-rest-knox's AuthToken), shown once."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from knox.crypto import hash_token
from knox.models import AuthToken

from payments.audit import audit_record
from payments.models import AuditLog


def api_token_create(*, user, expires_in: timedelta | None = None, actor: str = "") -> str:
    """Make an API token for ``user`` and return it: the only time it can be read."""
    with transaction.atomic():
        instance, token = AuthToken.objects.create(user=user, expiry=expires_in)
        audit_record(
            action="api_token.created",
            actor_type=AuditLog.ActorType.STAFF if actor else AuditLog.ActorType.SYSTEM,
            actor=actor,
            target=instance.user,
            details={"token_key": instance.token_key[:8], "expiry": instance.expiry.isoformat() if instance.expiry else None},
        )
    return token


def api_token_matches(*, user, token: str) -> bool:
    """Whether ``token`` is one of ``user``'s live tokens (its digest is stored)."""
    return AuthToken.objects.filter(user=user, digest=hash_token(token)).exists()
