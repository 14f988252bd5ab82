"""Small pieces several provider adapters share: pydantic field types for provider payloads and
the exact amount conversions, raised as field errors (never rounded)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints

from core.money import MAX_AMOUNT_CHARS, MAX_MINOR_AMOUNT, MoneyError, currency_code, parse_major_amount

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]


def _currency(value: str) -> str:
    try:
        return currency_code(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from exc


# Providers disagree on case ("usd", "THB"); ours is the upper-case ISO code.
CurrencyCode = Annotated[str, AfterValidator(_currency)]


def minor_or_error(convert: Callable[[Any, str], int], value: Any, currency: str | None) -> int:
    """Run an amount conversion inside a pydantic validator: a ``MoneyError`` becomes the field's
    error message. Without a currency (its own field failed) there is nothing to check against."""
    if currency is None:
        return 0
    try:
        minor = convert(value, currency)
    except MoneyError as exc:
        raise ValueError(str(exc)) from exc
    if minor > MAX_MINOR_AMOUNT:
        raise ValueError("amount is implausibly large")
    return minor


def integer_units(value: Any) -> int:
    """A provider's integer count of units: an int, or a string or JSON number that is one
    (Paystack sends ``"5000"`` in some samples). Never a fraction, a sign or a boolean."""
    if isinstance(value, bool):
        raise MoneyError("amount must be an integer, got a boolean")
    # Sizes are checked before any conversion: int() of 1E+1000000, or of a long digit string,
    # costs time proportional to its digits.
    if isinstance(value, int):
        number = value
    elif (
        isinstance(value, Decimal)
        and value.is_finite()
        and value.adjusted() < MAX_AMOUNT_CHARS
        and value == value.to_integral_value()
    ):
        number = int(value)
    elif (
        isinstance(value, str)
        and len(value) <= MAX_AMOUNT_CHARS
        # ASCII digits only: str.isdigit() is true for "²" and "١٢", which are no amount here.
        and value.isascii()
        and value.isdigit()
        and (value == "0" or not value.startswith("0"))
    ):
        number = int(value)
    else:
        raise MoneyError(f"amount must be a whole number of units, got {value!r}")
    if number < 0:
        raise MoneyError(f"amount must not be negative, got {number}")
    return number


def major_units(value: Any, currency: str) -> int:
    """Major units as a decimal string or JSON number (Chapa, Flutterwave), strictly."""
    return parse_major_amount(value, currency)


def metadata_text(metadata: Any, key: str) -> str:
    """A string value from a provider's free-form metadata object ("" when absent)."""
    if isinstance(metadata, dict):
        value = metadata.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)[:128]
    return ""
