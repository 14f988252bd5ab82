"""Text messages to parents, through a pluggable backend, as Django sends email through
``EMAIL_BACKEND``: ``settings.SMS_BACKEND`` is the dotted path of a ``BaseSmsBackend`` subclass.

- ``payments.sms.console.ConsoleSmsBackend``: prints each message (development);
- ``payments.sms.locmem.LocmemSmsBackend``: keeps them in ``payments.sms.outbox`` (tests);
- ``payments.sms.africastalking.AfricasTalkingSmsBackend``: Africa's Talking's SMS API.

A backend says how a send ended with one of three errors: ``SmsNotSent`` (nothing went out:
safe to try again later), ``SmsRefused`` (the provider will not send this one: do not retry) and
``SmsInDoubt`` (the request went out and its answer was lost: retrying could send it twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.utils.module_loading import import_string

# What ``LocmemSmsBackend`` sent, like ``django.core.mail.outbox``.
outbox: list[SmsMessage] = []


@dataclass(frozen=True)
class SmsMessage:
    to: str  # as staff typed it; each backend normalizes it its own way
    body: str


@dataclass(frozen=True)
class SmsSent:
    message_id: str = ""


class SmsError(Exception):
    """Base of the three outcomes below; the message is safe to show to staff (no secret)."""


class SmsNotSent(SmsError):
    """Nothing was sent (no connection, the provider busy or down): try again later."""


class SmsRefused(SmsError):
    """The provider refused this message (bad number, blacklisted, no credit, bad credentials):
    trying again will not help until someone fixes the cause."""


class SmsInDoubt(SmsError):
    """The request reached the provider but its answer was lost (a read timeout): the message
    may have gone out, so it must not be sent again by itself."""


class BaseSmsBackend:
    """The contract of an SMS backend. Subclasses implement ``send``."""

    def send(self, message: SmsMessage) -> SmsSent:
        """Send one message to one number. Returns the provider's id for it, or raises
        ``SmsNotSent``, ``SmsRefused`` or ``SmsInDoubt``. Every network call has a timeout
        (``settings.SMS_TIMEOUT_SECONDS``)."""
        raise NotImplementedError


class UnconfiguredSmsBackend(BaseSmsBackend):
    """Where no SMS gateway is set (``SMS_BACKEND``) outside development: every text is refused,
    so staff see it was not sent; nothing is printed (a text holds its link)."""

    def send(self, message: SmsMessage) -> SmsSent:
        raise SmsRefused("no SMS gateway is configured (SMS_BACKEND)")


class SmsBackendUnknown(LookupError):
    pass


@lru_cache(maxsize=8)
def _backend_class(path: str) -> type[BaseSmsBackend]:
    try:
        backend = import_string(path)
    except ImportError as exc:
        raise SmsBackendUnknown(f"SMS_BACKEND {path!r} cannot be imported") from exc
    if not (isinstance(backend, type) and issubclass(backend, BaseSmsBackend)):
        raise SmsBackendUnknown(f"SMS_BACKEND {path!r} is not a BaseSmsBackend")
    return backend


def get_sms_backend(path: str | None = None) -> BaseSmsBackend:
    """A new backend of ``path`` (default ``settings.SMS_BACKEND``)."""
    return _backend_class(path or settings.SMS_BACKEND)()
