"""Time zones of schools: IANA names validated, and times shown in a school's zone.

Times are stored in UTC; a school has its own zone (``School.time_zone``) and every time staff
or parents read is in it, written with its offset where a machine reads it (exports)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from django.core.exceptions import ValidationError


@lru_cache(maxsize=1)
def time_zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def validate_time_zone(value: str) -> None:
    """An IANA name such as ``Africa/Kampala``: anything else (an offset, an abbreviation, a
    typo) is refused, since "EAT" or "+03:00" says nothing about summer time."""
    if value not in time_zone_names():
        raise ValidationError(f"{value!r} is not an IANA time zone name (for example Africa/Kampala).")


def zone(name: str | None) -> ZoneInfo:
    """The zone named ``name``; UTC for a blank or unknown name (a stored value is validated,
    so this only guards against a zone removed from the system's database)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local(moment: datetime | None, name: str | None) -> datetime | None:
    """``moment`` in the zone named ``name``."""
    if moment is None:
        return None
    return moment.astimezone(zone(name))


def local_display(moment: datetime | None, name: str | None, *, seconds: bool = False) -> str:
    """``2026-12-05 22:15 EAT``: what staff and parents read. "—" for no time at all."""
    if moment is None:
        return "—"
    at = local(moment, name)
    return at.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


def local_iso(moment: datetime | None, name: str | None) -> str:
    """``2026-12-05T22:15:00+03:00``: ISO 8601 with the school's offset (exports)."""
    return "" if moment is None else local(moment, name).isoformat()


def day_bounds(day: date, name: str | None) -> tuple[datetime, datetime]:
    """The start and end (exclusive) of ``day`` in the zone named ``name``, as aware times. A
    day is not always 24 hours long (summer time), so the end is the next day's midnight."""
    tz = zone(name)
    return datetime.combine(day, time.min, tzinfo=tz), datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz)


def local_today(name: str | None, now: datetime) -> date:
    return now.astimezone(zone(name)).date()
