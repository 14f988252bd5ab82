"""Times in a school's zone, for any template: ``{{ payment.created_at|school_time:payment.school }}``
reads "2026-12-05 22:15 EAT" for a Kampala school; ``school_time_iso`` gives ISO 8601 with the
offset (for a ``<time datetime>`` attribute); ``school_zone`` hands Django's own ``date`` and
``time`` filters the time in the school's zone: ``{{ paid_at|school_zone:school|date:"j F Y" }}``."""

from __future__ import annotations

from django import template
from django.templatetags.tz import do_timezone

from core.timezones import local_display, local_iso

register = template.Library()


def _zone_name(school) -> str | None:
    return school if isinstance(school, str) else getattr(school, "time_zone", None)


@register.filter
def school_time(moment, school):
    return local_display(moment, _zone_name(school))


@register.filter
def school_time_iso(moment, school):
    return local_iso(moment, _zone_name(school))


@register.filter
def school_zone(moment, school):
    if not moment:
        return moment
    return do_timezone(moment, _zone_name(school) or "UTC")
