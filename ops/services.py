"""Writes of the ops app: the retention of stored webhook bodies, and re-encrypting secrets with
the newest key during a key rotation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from payments.audit import audit_record
from payments.models import AuditLog, WebhookEvent

logger = logging.getLogger(__name__)

# Only events whose processing is over: a pending or processing event still needs its body.
FINISHED = (
    WebhookEvent.Status.PROCESSED,
    WebhookEvent.Status.FAILED,
    WebhookEvent.Status.REJECTED,
    WebhookEvent.Status.SUPERSEDED,
)


def webhook_bodies_purge(
    *, retention_days: int | None = None, batch_size: int = 1000, now: datetime | None = None
) -> int:
    """Delete the stored raw body and headers of finished webhook events received more than
    ``retention_days`` (WEBHOOK_BODY_RETENTION_DAYS) ago; returns how many were purged.

    Each event keeps its metadata (provider event id, type, status, result, errors, times) and
    gets ``body_purged_at``; payments and the audit log are not touched. Works in batches, each
    its own short transaction, walking the primary key once (no index on ``received_at`` alone
    is needed). The update repeats the conditions, so an event replayed (back to pending) while
    the job runs keeps its body. One audit entry records the run.
    """
    days = settings.WEBHOOK_BODY_RETENTION_DAYS if retention_days is None else retention_days
    if days < 1:
        raise ValueError("the retention must be at least one day")
    now = now or timezone.now()
    cutoff = now - timedelta(days=days)
    due = WebhookEvent.objects.filter(
        status__in=FINISHED, received_at__lt=cutoff, body_purged_at__isnull=True
    ).order_by("pk")
    purged, last_pk = 0, 0
    while True:
        batch = list(due.filter(pk__gt=last_pk).values_list("pk", flat=True)[:batch_size])
        if not batch:
            break
        last_pk = batch[-1]
        with transaction.atomic():
            purged += due.filter(pk__in=batch).update(raw_body="", headers={}, body_purged_at=now)
    if purged:
        audit_record(
            action="webhook.bodies_purged",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor="retention",
            details={"events": purged, "received_before": cutoff.isoformat(), "retention_days": days},
        )
    logger.info("purged the stored bodies of %d webhook events received before %s", purged, cutoff.isoformat())
    return purged


# --- Key rotation -------------------------------------------------------------------------------


@dataclass
class ReencryptReport:
    """What a re-encryption run found and did, per ``model.field`` and in total."""

    checked: int = 0  # non-empty encrypted values looked at
    rewritten: int = 0  # re-encrypted with the newest key (or, with check_only, that need it)
    changed_meanwhile: int = 0  # rewritten by the service during the run: already on the newest key
    undecryptable: list[str] = field(default_factory=list)  # "model.field pk=...": no key opens it
    per_field: dict[str, int] = field(default_factory=dict)  # model.field -> rewritten


def encrypted_fields() -> list[tuple[type, list]]:
    """(model, its encrypted fields) for every installed model that has some."""
    from django.apps import apps

    from core.fields import EncryptedJSONField, EncryptedTextField

    found = []
    for model in apps.get_models():
        fields = [f for f in model._meta.concrete_fields if isinstance(f, (EncryptedTextField, EncryptedJSONField))]
        if fields and not model._meta.proxy:
            found.append((model, fields))
    return found


def secrets_reencrypt(
    *,
    batch_size: int = 200,
    check_only: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ReencryptReport:
    """Re-encrypt every encrypted value (webhook secrets, API credentials, QuickBooks tokens)
    with the first key of FIELD_ENCRYPTION_KEYS, so the older keys can then be removed.

    Idempotent and resumable: a value the newest key already opens is left as it is, so a second
    run, or a run after an interrupted one, rewrites only what is still on an older key. Works in
    batches along the primary key, each batch its own short transaction; the plaintext never
    leaves this function. A value is replaced only if it is still the one read (the service may
    have saved a new secret meanwhile, with the newest key). ``check_only`` counts what would be
    rewritten and writes nothing. A value no key opens is reported, not touched.
    """
    from cryptography.fernet import Fernet, InvalidToken

    from core.fields import fernet

    keys = settings.FIELD_ENCRYPTION_KEYS
    newest = Fernet(keys[0].encode())
    all_keys = fernet()
    report = ReencryptReport()
    quote = connection.ops.quote_name
    for model, fields in encrypted_fields():
        table, pk_column = quote(model._meta.db_table), quote(model._meta.pk.column)
        columns = [quote(f.column) for f in fields]
        labels = [f"{model._meta.label}.{f.name}" for f in fields]
        for label in labels:
            report.per_field.setdefault(label, 0)
        last_pk = None
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                where, params = ("", []) if last_pk is None else (f"WHERE {pk_column} > %s", [last_pk])
                cursor.execute(
                    f"SELECT {pk_column}, {', '.join(columns)} FROM {table} {where} ORDER BY {pk_column} LIMIT %s",  # noqa: S608 - quoted names
                    [*params, batch_size],
                )
                rows = cursor.fetchall()
                for pk, *tokens in rows:
                    for column, label, token in zip(columns, labels, tokens):
                        if not token:
                            continue
                        report.checked += 1
                        raw = token.encode("ascii")
                        try:
                            newest.decrypt(raw)
                            continue  # already on the newest key
                        except InvalidToken:
                            pass
                        try:
                            rotated = all_keys.rotate(raw).decode("ascii")
                        except InvalidToken:
                            report.undecryptable.append(f"{label} pk={pk}")
                            continue
                        if check_only:
                            report.rewritten += 1
                            report.per_field[label] += 1
                            continue
                        cursor.execute(
                            f"UPDATE {table} SET {column} = %s WHERE {pk_column} = %s AND {column} = %s",  # noqa: S608
                            [rotated, pk, token],
                        )
                        if cursor.rowcount == 1:
                            report.rewritten += 1
                            report.per_field[label] += 1
                        else:
                            report.changed_meanwhile += 1
            if not rows:
                break
            last_pk = rows[-1][0]
            if progress:
                progress(f"{model._meta.label}: up to pk {last_pk}")
    if report.rewritten and not check_only:
        audit_record(
            action="secrets.reencrypted",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor="reencrypt_secrets",
            details={"rewritten": report.rewritten, "per_field": report.per_field, "keys": len(keys)},
        )
    logger.info(
        "re-encryption %s: %d values checked, %d %s, %d changed meanwhile, %d undecryptable",
        "check" if check_only else "run",
        report.checked,
        report.rewritten,
        "to rewrite" if check_only else "rewritten",
        report.changed_meanwhile,
        len(report.undecryptable),
    )
    return report
