"""The dead-letter queue of webhook ingestion: a delivery whose signature is right but whose body
cannot be used is kept as a ``rejected`` event, for staff to read and replay (``webhooks.replay``)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from django.db import IntegrityError, transaction
from django.db.models import F

from payments import outbox
from payments.models import ProviderAccount, WebhookEvent
from providers.base import ProviderAdapter, storable_text, stored_text_limits
from providers.errors import PayloadInvalid, PayloadMalformed
from webhooks.selectors import storable_headers

# A dead letter keeps the first errors, each cut short: enough for staff, bounded in size.
DEAD_LETTER_MAX_ERRORS = 50
DEAD_LETTER_ERROR_MAX_CHARS = 500


def dead_letter_errors(exc: PayloadMalformed | PayloadInvalid) -> list[dict[str, str]]:
    errors = exc.errors if isinstance(exc, PayloadInvalid) else [{"field": "(body)", "message": exc.detail}]
    # Messages may quote the payload (NUL, lone surrogates, any length): made storable.
    return [
        {key: storable_text(text, DEAD_LETTER_ERROR_MAX_CHARS) for key, text in error.items()}
        for error in errors[:DEAD_LETTER_MAX_ERRORS]
    ]


def webhook_dead_letter_record(
    *,
    adapter: ProviderAdapter,
    account: ProviderAccount,
    exc: PayloadMalformed | PayloadInvalid,
    body: bytes,
    headers: Mapping[str, str],
    remote_addr: str | None,
) -> WebhookEvent:
    """Keep a signed but invalid delivery as a rejected event (the dead-letter queue).

    The same body delivered again (providers retry on 400) bumps the existing dead letter's
    attempt count instead of adding a row.
    """
    body_sha256 = hashlib.sha256(body).hexdigest()
    errors = dead_letter_errors(exc)
    try:
        with transaction.atomic():
            dead_letter = WebhookEvent.objects.create(
                account=account,
                external_event_id=None,
                event_type=storable_text(getattr(exc, "event_type", ""), stored_text_limits()["event_type"]),
                status=WebhookEvent.Status.REJECTED,
                # Kept for staff to read and replay: bytes that are not UTF-8 and NULs (which
                # PostgreSQL refuses) become U+FFFD; body_sha256 is of the bytes received.
                raw_body=body.decode("utf-8", errors="replace").replace("\x00", "\ufffd"),
                headers=storable_headers(headers, adapter),
                body_sha256=body_sha256,
                errors=errors,
                last_error=storable_text(exc.detail, 2000),
                attempts=1,
                remote_addr=remote_addr,
            )
            outbox.outbox_write(
                event_type="webhook.dead_lettered",
                school_id=account.school_id,
                key=outbox.webhook_key(provider=account.provider, account_id=account.pk, txn_id="", event_id=body_sha256),
                payload={
                    "provider": account.provider,
                    "account_id": account.pk,
                    "school_id": account.school_id,
                    "webhook_event_id": dead_letter.pk,
                    "event_type": dead_letter.event_type,
                    "body_sha256": body_sha256,
                    "errors": errors[:20],
                    "received_at": dead_letter.received_at.isoformat(),
                },
            )
            return dead_letter
    except IntegrityError:
        dead_letter = WebhookEvent.objects.get(
            account=account, body_sha256=body_sha256, status=WebhookEvent.Status.REJECTED
        )
        WebhookEvent.objects.filter(pk=dead_letter.pk).update(attempts=F("attempts") + 1)
        return dead_letter
