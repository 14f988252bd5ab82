"""Paystack: ``adapter.py`` (the adapter: verification, parsing, payment API), ``wire.py`` (its
webhooks as the provider sends them), ``fake.py`` (a fake of its API), ``payloads/`` (recorded
and documented payloads, with their sources), ``tests/``.

What each part is: docs/adding-a-provider.md."""

from providers.paystack.adapter import PaystackProvider

__all__ = ["PaystackProvider"]
