"""What staff read in lists and summaries: times in the school's zone, provider names, amounts
that never wrap. Shared by every admin (the books' and webhooks' too)."""

from __future__ import annotations

from django.contrib.admin.filters import AllValuesFieldListFilter
from django.utils.html import format_html

from core.timezones import local_display, local_iso
from payments import selectors
from payments.models import Payment
from payments.models.money import MANUAL_PROVIDER


def school_time(moment, school, *, seconds: bool = False):
    """A ``<time>`` in the school's zone, its ISO value (with offset) for machines."""
    if moment is None:
        return "—"
    zone = getattr(school, "time_zone", None)
    return format_html(
        '<time datetime="{}">{}</time>', local_iso(moment, zone), local_display(moment, zone, seconds=seconds)
    )


def amount_cell(text: str):
    """An amount on one line: "UGX 450,000" is never cut into "UGX" and "450,000"."""
    return format_html('<span class="amount">{}</span>', text)


def payment_how(payment: Payment) -> str:
    """"Stripe", "SurePay", or for a payment reported by a parent its method ("Bank transfer")."""
    if payment.provider == MANUAL_PROVIDER or payment.is_manual:
        return payment.get_method_display()
    return selectors.provider_display_name(payment.provider)


class ProviderNameFilter(AllValuesFieldListFilter):
    """The stock "by provider" filter (same query parameter), with providers' display names."""

    def choices(self, changelist):
        slugs = {str(slug) for slug in self.lookup_choices if slug is not None}
        for choice in super().choices(changelist):
            display = str(choice["display"])
            slug, _, count = display.partition(" (")  # "surepay (3)" when facets are shown
            if slug in slugs:
                choice = {**choice, "display": _provider_label(slug) + (f" ({count}" if count else "")}
            yield choice


def _provider_label(slug: str) -> str:
    return "Manual (reported by a parent)" if slug == MANUAL_PROVIDER else selectors.provider_display_name(slug)
