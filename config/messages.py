"""The settings of messages to parents (pay links, reminders, receipts): email through Django's
``EMAIL_BACKEND``, SMS through ``SMS_BACKEND`` (``payments/sms/``). Kept apart from
``config/settings.py``, which takes them with ``globals().update(message_settings(...))``."""

from __future__ import annotations

from typing import Any

from config.env import env_bool, env_int, env_str


def message_settings(*, app_env: str, local_fakes: bool, fakes_base_url: str, public_base_url: str) -> dict[str, Any]:
    host = public_base_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    return {
        # Printed in development; SMTP everywhere else.
        "EMAIL_BACKEND": env_str("EMAIL_BACKEND")
        or (
            "django.core.mail.backends.console.EmailBackend"
            if app_env == "development"
            else "django.core.mail.backends.smtp.EmailBackend"
        ),
        "EMAIL_HOST": env_str("EMAIL_HOST") or "localhost",
        "EMAIL_PORT": env_int("EMAIL_PORT", 25),
        "EMAIL_HOST_USER": env_str("EMAIL_HOST_USER") or "",
        "EMAIL_HOST_PASSWORD": env_str("EMAIL_HOST_PASSWORD") or "",
        "EMAIL_USE_TLS": env_bool("EMAIL_USE_TLS", False),
        "EMAIL_USE_SSL": env_bool("EMAIL_USE_SSL", False),
        "EMAIL_TIMEOUT": float(env_str("EMAIL_TIMEOUT_SECONDS") or 10),
        "DEFAULT_FROM_EMAIL": env_str("DEFAULT_FROM_EMAIL") or "School payments <payments@localhost>",
        # The domain of each email's Message-ID (<notice-<id>@domain>).
        "EMAIL_MESSAGE_ID_DOMAIN": env_str("EMAIL_MESSAGE_ID_DOMAIN") or host or "localhost",
        # A BaseSmsBackend's dotted path, as EMAIL_BACKEND. Printed in development and tests; refused
        # (each text recorded as not sent) elsewhere unless set: a printed text holds its pay link
        # or receipt link, which must never reach a production log.
        "SMS_BACKEND": env_str("SMS_BACKEND")
        or (
            "payments.sms.console.ConsoleSmsBackend"
            if app_env in ("development", "test")
            else "payments.sms.UnconfiguredSmsBackend"
        ),
        "SMS_TIMEOUT_SECONDS": float(env_str("SMS_TIMEOUT_SECONDS") or 10),
        # Africa's Talking (SMS_BACKEND=payments.sms.africastalking.AfricasTalkingSmsBackend); its
        # sandbox is https://api.sandbox.africastalking.com/version1/messaging. In development the
        # local fake, with its demo username and key.
        "AFRICASTALKING_API_URL": env_str("AFRICASTALKING_API_URL")
        or (
            f"{fakes_base_url}/africastalking/version1/messaging"
            if local_fakes
            else "https://api.africastalking.com/version1/messaging"
        ),
        "AFRICASTALKING_USERNAME": env_str("AFRICASTALKING_USERNAME") or ("sandbox" if local_fakes else ""),
        "AFRICASTALKING_API_KEY": env_str("AFRICASTALKING_API_KEY") or ("demo-africastalking-key" if local_fakes else ""),
        "AFRICASTALKING_SENDER_ID": env_str("AFRICASTALKING_SENDER_ID") or "",
        # A message that could not go out is tried again with backoff, this many attempts in all.
        "NOTICE_MAX_ATTEMPTS": env_int("NOTICE_MAX_ATTEMPTS", 6),
        # A send claimed this long ago whose worker never finished is marked in doubt (never resent).
        "NOTICE_CLAIM_SECONDS": env_int("NOTICE_CLAIM_SECONDS", 600),
    }


def message_beat_schedule() -> dict[str, dict]:
    return {
        # Hourly: the first run of a school's day queues its reminders, the others find them queued.
        "payment-reminders-due": {
            "task": "payments.tasks.payment_reminders_due",
            "schedule": env_int("PAYMENT_REMINDERS_INTERVAL_SECONDS", 3600),
        },
        "notices-sweep": {
            "task": "payments.tasks.notices_sweep",
            "schedule": env_int("NOTICE_SWEEP_INTERVAL_SECONDS", 300),
        },
    }
