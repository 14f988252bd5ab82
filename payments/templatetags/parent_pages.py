"""Template helpers of the parent pages."""

from django import template
from django.utils.translation import get_language

from core.money import format_minor_for

register = template.Library()


@register.filter
def money(amount_minor: int, currency: str) -> str:
    """An amount as the page's language writes it: ``{{ payment.amount_minor|money:payment.currency }}``."""
    if amount_minor is None or not currency:
        return ""
    return format_minor_for(amount_minor, currency, get_language() or "en")
