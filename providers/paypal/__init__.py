"""PayPal: Orders v2 checkout and capture, webhooks verified through PayPal's
verify-webhook-signature API (docs/adding-a-provider.md)."""

from providers.paypal.adapter import PayPalProvider

__all__ = ["PayPalProvider"]
