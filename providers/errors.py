"""The providers' small vocabulary of failures.

The webhook endpoint maps each class to one HTTP status in one place (``webhooks.views``);
background work maps them to retry or give up (``TransientError`` / ``PermanentError``).
Every ``detail`` is safe to send back to the caller: it never holds a secret or a payload.
"""

from __future__ import annotations

from core.errors import PermanentError, TransientError


class ProviderError(Exception):
    detail = "Provider error"

    def __init__(self, detail: str | None = None):
        if detail is not None:
            self.detail = detail
        super().__init__(self.detail)


class UnknownProvider(ProviderError):
    def __init__(self, slug: str):
        self.slug = slug
        super().__init__(f"Unknown provider {slug!r}")


class SignatureMissing(ProviderError):
    detail = "Signature missing"


class SignatureInvalid(ProviderError):
    detail = "Signature invalid"


class PayloadMalformed(ProviderError, PermanentError):
    """The body is not the JSON object the provider sends."""

    detail = "Malformed JSON body"


class PayloadInvalid(ProviderError, PermanentError):
    """The body is JSON but a field is missing or wrong; ``errors`` lists each field."""

    detail = "Invalid webhook payload"

    def __init__(self, errors: list[dict[str, str]], *, event_type: str = ""):
        self.errors = errors
        self.event_type = event_type
        super().__init__()


class ProviderUnavailable(ProviderError, TransientError):
    """Timeout, connection failure, 5xx or throttling: try again later."""

    detail = "Provider unavailable"


class ProviderRejected(ProviderError, PermanentError):
    """The provider refused the request (4xx): retrying the same request will not help."""

    detail = "Provider rejected the request"


class OperationNotSupported(ProviderError, PermanentError):
    detail = "This provider does not support that operation"
