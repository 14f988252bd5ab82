"""A parent's contact, as staff give it on a payment request and payers type it on the pay page."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.core.validators import validate_email


class ContactInvalid(ValueError):
    """A parent's email address or phone number that cannot be used; the message says why."""


def parent_email_clean(value: str | None) -> str:
    """An email address as a provider's checkout takes it (``""`` when none is given): trimmed,
    one address, checked like Django's EmailField."""
    email = (value or "").strip()
    if not email:
        return ""
    if len(email) > 254:
        raise ContactInvalid("At most 254 characters.")
    try:
        validate_email(email)
    except ValidationError as exc:
        raise ContactInvalid(f"{email!r} is not an email address (for example name@example.com).") from exc
    return email


def parent_phone_clean(value: str | None) -> str:
    """A phone number as staff type it (``0712 345 678``, ``+254 712 345678``): digits, spaces,
    ``+``, ``-`` and brackets, 7 to 15 digits. Kept as typed: each provider that needs a phone
    normalizes it its own way (M-Pesa: ``core.phone``)."""
    phone = " ".join((value or "").split())
    if not phone:
        return ""
    digits = re.sub(r"\D", "", phone)
    if len(phone) > 20 or not re.fullmatch(r"\+?[0-9 ()\-]+", phone) or not 7 <= len(digits) <= 15:
        raise ContactInvalid(f"{phone!r} is not a phone number (for example 0712 345 678 or +254 712 345678).")
    return phone


def validate_parent_phone(value: str) -> None:
    """The model field's validator (admin forms)."""
    try:
        parent_phone_clean(value)
    except ContactInvalid as exc:
        raise ValidationError(str(exc)) from exc


# The country calling code of a school's national numbers (``0712 345 678``), by its currency.
# Currencies shared by several countries (XOF, XAF) have none: staff type ``+225 ...`` there.
CALLING_CODES = {
    "UGX": "256", "KES": "254", "TZS": "255", "RWF": "250", "NGN": "234", "GHS": "233",
    "ETB": "251", "ZAR": "27", "ZMW": "260", "MWK": "265", "THB": "66",
}  # fmt: skip


def parent_phone_international(phone: str, *, currency: str) -> str:
    """A parent's number in international form for an SMS gateway: ``+256712345678``. A number
    typed with ``+`` (or ``00``) keeps its country; a national one (leading ``0``) gets the
    school's, from its currency."""
    cleaned = parent_phone_clean(phone)
    digits = re.sub(r"\D", "", cleaned)
    if cleaned.startswith("+"):
        return "+" + digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    code = CALLING_CODES.get(currency)
    if code is None:
        raise ContactInvalid(f"{cleaned!r}: give the number with its country code (+...).")
    if digits.startswith(code) and len(digits) > 10:
        return "+" + digits
    return f"+{code}{digits.lstrip('0')}"
