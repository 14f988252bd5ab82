"""SurePay and similar school-fee aggregators: ``adapter.py`` (the adapter: verification, parsing,
payment API), ``wire.py`` (its webhooks as the provider sends them), ``payloads/`` (recorded and
documented payloads, with their sources), ``tests/``.

What each part is: docs/adding-a-provider.md."""

from providers.surepay.adapter import SurePayProvider

__all__ = ["SurePayProvider"]
