"""What staff read in lists and summaries: times in the school's zone, provider names, amounts
that never wrap. Shared by every admin (the books' and webhooks' too)."""

from __future__ import annotations

import hashlib

from django.contrib import admin
from django.contrib.admin.filters import AllValuesFieldListFilter
from django.core.cache import cache
from django.core.exceptions import EmptyResultSet
from django.utils.html import format_html

from core.timezones import local_display, local_iso
from payments import selectors
from payments.admin.filters import amount_search
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


class CachedValuesFilter(AllValuesFieldListFilter):
    """The stock filter by every value present (same query parameter), its values kept a few
    minutes per list and scope: finding the distinct currencies or providers of a million
    payments reads them all (about 100 ms each), for every page of the list. A value that
    appears in the meantime is offered when the entry expires."""

    cache_seconds = 300

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        query = self.lookup_choices  # not run yet: its SQL names the list and the user's schools
        if query.model is not model:
            return  # the values of a related table (an event's account): small, read as they are
        try:
            sql = str(query.query)
        except EmptyResultSet:  # a user of no school: nothing to read
            self.lookup_choices = []
            return
        key = "admin-values:" + hashlib.sha256(sql.encode()).hexdigest()[:32]
        values = cache.get(key)
        if values is None:
            values = list(query)
            cache.set(key, values, self.cache_seconds)
        self.lookup_choices = values


class ProviderNameFilter(CachedValuesFilter):
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



class SchoolColumnForManySchools:
    """A school-scoped admin list's "School" column, shown only to staff of several schools: a
    one-school bursar has nothing to tell apart, and the room goes to what they scan."""

    school_column = "school_code"

    def get_list_display(self, request):
        columns = list(super().get_list_display(request))
        if selectors.staff_single_school(user=request.user) is None:
            columns.insert(1, self.school_column)
        return columns

    @admin.display(description="School", ordering="school__code")
    def school_code(self, obj):
        return obj.school.code


class AmountSearch:
    """The list's search also finds an amount typed as the bursar writes it ("450,000")."""

    def get_search_results(self, request, queryset, search_term):
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        by_amount = amount_search(search_term)
        if by_amount is not None:
            found = found | queryset.filter(by_amount)
        return found, may_have_duplicates
