"""Phone numbers for on-phone payment prompts (M-Pesa STK Push).

Daraja wants the payer's number as ``2547XXXXXXXX`` or ``2541XXXXXXXX`` (country code, no ``+``).
Parents type it the way they know it (``0712 345 678``, ``+254 712 345678``); this turns those
into the one form the adapter sends, or says why it cannot.
"""

from __future__ import annotations

import re


class PhoneInvalid(ValueError):
    """The message is safe to show to the parent."""


_SEPARATORS = re.compile(r"[\s\-().]")
_KENYAN_MOBILE = re.compile(r"^254[17]\d{8}$")


def normalize_mpesa_phone(value: str) -> str:
    """``"0712 345 678"`` / ``"+254712345678"`` / ``"254712345678"`` -> ``"254712345678"``."""
    digits = _SEPARATORS.sub("", value or "")
    if digits.startswith("+"):
        digits = digits[1:]
    if re.fullmatch(r"0[17]\d{8}", digits):
        digits = "254" + digits[1:]
    elif re.fullmatch(r"[17]\d{8}", digits):
        digits = "254" + digits
    if not _KENYAN_MOBILE.fullmatch(digits):
        raise PhoneInvalid("Enter a Safaricom number such as 0712 345 678.")
    return digits


def mask_phone(phone: str) -> str:
    """``254712345678`` -> ``2547******78``: enough for the parent to recognise it."""
    if len(phone) < 6:
        return "*" * len(phone)
    return phone[:4] + "*" * (len(phone) - 6) + phone[-2:]
