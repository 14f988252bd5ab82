"""List filters of the payment admin that are not a plain field."""

from __future__ import annotations

import re
from collections import defaultdict

from django.contrib import admin
from django.contrib.admin.filters import DateFieldListFilter
from django.db.models import Q

from core.money import CURRENCY_EXPONENTS, MoneyError, parse_major_amount

_AMOUNT_TERM = re.compile(r"(?:(?P<currency>[A-Za-z]{3})\s*)?(?P<amount>\d[\d,]*(?:\.\d+)?)")


def amount_search(term: str) -> Q | None:
    """The payments whose amount is ``term`` as a bursar writes it ("450,000", "450000",
    "UGX 450,000", "1,500.50"), in any currency where it is a valid amount; None when the term
    is not an amount. Exact, in minor units: "1,500.5" finds KES 1,500.50, never a rounding."""
    match = _AMOUNT_TERM.fullmatch(term.strip())
    if match is None:
        return None
    currency = (match.group("currency") or "").upper()
    by_exponent: dict[int, list[str]] = defaultdict(list)
    for code, places in CURRENCY_EXPONENTS.items():
        if not currency or code == currency:
            by_exponent[places].append(code)
    found = Q(pk__in=[])
    for codes in by_exponent.values():
        try:
            minor = parse_major_amount(match.group("amount"), codes[0])
        except MoneyError:  # more decimals than these currencies have, or absurdly large
            continue
        found |= Q(currency__in=codes, amount_minor=minor)
    return found


class StatusChangedFilter(DateFieldListFilter):
    """By the day of the payment's last status change: "succeeded today" is money in today."""

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        self.title = "status changed"


class LedgerConflictFilter(admin.SimpleListFilter):
    """Payments whose reports cannot all be true (payments.ledger): staff check them with the provider."""

    title = "reports that disagree"
    parameter_name = "conflict"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(ledger_conflict="")
        if self.value() == "no":
            return queryset.filter(ledger_conflict="")
        return queryset


class WaitingFilter(admin.SimpleListFilter):
    """Facts that arrived before their payment and wait for it."""

    title = "waiting for its payment"
    parameter_name = "waiting"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(payment__isnull=True)
        if self.value() == "no":
            return queryset.filter(payment__isnull=False)
        return queryset


class RiskFilter(admin.SimpleListFilter):
    """Payments flagged by risk scoring (payments.risk): all flagged, those held from the books,
    those a staff member cleared."""

    title = "risk"
    parameter_name = "risk"

    def lookups(self, request, model_admin):
        return [("high", "High risk"), ("held", "Held from the books"), ("cleared", "Cleared by staff")]

    def queryset(self, request, queryset):
        if self.value() == "high":
            return queryset.filter(risk_flagged=True)
        if self.value() == "held":
            return queryset.filter(risk_held=True)
        if self.value() == "cleared":
            return queryset.filter(risk_flagged=True, risk_cleared_at__isnull=False)
        return queryset
