"""Money: integer minor units plus an ISO 4217 code, and nothing else.

One currency table, one strict parser for amounts written in major units (``"100,000"``,
``"1,000.50"``), and one ``to_minor`` / ``from_minor`` pair. Anything ambiguous is an error,
never a rounding: a mis-rounded payment is the worst bug this product can have.

Providers that count in their own units (Stripe's zero-decimal list, Daraja's whole shillings)
convert with ``scale_units``, which refuses any conversion that would lose a digit.
"""

from __future__ import annotations

import re
from decimal import Decimal

# ISO 4217 List One, minor units ("exponent") of every circulating currency. Fund codes, precious
# metals and testing codes (BOV, XAU, XTS, XXX, ...) are left out: no school is paid in them.
# Source: the ISO 4217 maintenance agency's list (machine copy: moneyphp/iso-currencies), plus
# SLE and ZWG, which replaced SLL and ZWL.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AED": 2, "AFN": 2, "ALL": 2, "AMD": 2, "ANG": 2, "AOA": 2, "ARS": 2, "AUD": 2, "AWG": 2,
    "AZN": 2, "BAM": 2, "BBD": 2, "BDT": 2, "BGN": 2, "BHD": 3, "BIF": 0, "BMD": 2, "BND": 2,
    "BOB": 2, "BRL": 2, "BSD": 2, "BTN": 2, "BWP": 2, "BYN": 2, "BZD": 2, "CAD": 2, "CDF": 2,
    "CHF": 2, "CLP": 0, "CNY": 2, "COP": 2, "CRC": 2, "CUP": 2, "CVE": 2, "CZK": 2, "DJF": 0,
    "DKK": 2, "DOP": 2, "DZD": 2, "EGP": 2, "ERN": 2, "ETB": 2, "EUR": 2, "FJD": 2, "FKP": 2,
    "GBP": 2, "GEL": 2, "GHS": 2, "GIP": 2, "GMD": 2, "GNF": 0, "GTQ": 2, "GYD": 2, "HKD": 2,
    "HNL": 2, "HTG": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "IQD": 3, "IRR": 2, "ISK": 0,
    "JMD": 2, "JOD": 3, "JPY": 0, "KES": 2, "KGS": 2, "KHR": 2, "KMF": 0, "KPW": 2, "KRW": 0,
    "KWD": 3, "KYD": 2, "KZT": 2, "LAK": 2, "LBP": 2, "LKR": 2, "LRD": 2, "LSL": 2, "LYD": 3,
    "MAD": 2, "MDL": 2, "MGA": 2, "MKD": 2, "MMK": 2, "MNT": 2, "MOP": 2, "MRU": 2, "MUR": 2,
    "MVR": 2, "MWK": 2, "MXN": 2, "MYR": 2, "MZN": 2, "NAD": 2, "NGN": 2, "NIO": 2, "NOK": 2,
    "NPR": 2, "NZD": 2, "OMR": 3, "PAB": 2, "PEN": 2, "PGK": 2, "PHP": 2, "PKR": 2, "PLN": 2,
    "PYG": 0, "QAR": 2, "RON": 2, "RSD": 2, "RUB": 2, "RWF": 0, "SAR": 2, "SBD": 2, "SCR": 2,
    "SDG": 2, "SEK": 2, "SGD": 2, "SHP": 2, "SLE": 2, "SOS": 2, "SRD": 2, "SSP": 2, "STN": 2,
    "SVC": 2, "SYP": 2, "SZL": 2, "THB": 2, "TJS": 2, "TMT": 2, "TND": 3, "TOP": 2, "TRY": 2,
    "TTD": 2, "TWD": 2, "TZS": 2, "UAH": 2, "UGX": 0, "USD": 2, "UYU": 2, "UZS": 2, "VES": 2,
    "VND": 0, "VUV": 0, "WST": 2, "XAF": 0, "XCD": 2, "XOF": 0, "XPF": 0, "YER": 2, "ZAR": 2,
    "ZMW": 2, "ZWG": 2,
}  # fmt: skip

# Far above any school fee, far below the 64-bit column limit: a larger number is a bug upstream.
MAX_MINOR_AMOUNT = 10**15
# The longest amount text worth parsing: MAX_MINOR_AMOUNT with thousands separators and decimals
# fits easily. Longer text is refused before any conversion, so "1" followed by a million zeros
# costs nothing.
MAX_AMOUNT_CHARS = 32

# Digits with optional thousands separators (groups of exactly three), then an optional
# fractional part. No sign, no exponent, no spaces, no leading zeros ("007" is ambiguous).
_PLAIN = r"(?:0|[1-9]\d*)"
_GROUPED = r"[1-9]\d{0,2}(?:,\d{3})+"
_AMOUNT_RE = re.compile(rf"^(?P<int>{_GROUPED}|{_PLAIN})(?:\.(?P<frac>\d+))?$")


class MoneyError(ValueError):
    """An amount or currency that cannot be taken exactly. The message is safe to show."""


def currency_code(code: object) -> str:
    """Return the upper-case ISO code, or raise ``MoneyError`` for anything we do not know."""
    if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z]{3}", code):
        raise MoneyError(f"currency must be a 3-letter ISO 4217 code, got {code!r}")
    upper = code.upper()
    if upper not in CURRENCY_EXPONENTS:
        raise MoneyError(f"unknown currency {upper!r}")
    return upper


def exponent(currency: str) -> int:
    return CURRENCY_EXPONENTS[currency_code(currency)]


def parse_major_amount(value: object, currency: str) -> int:
    """Parse an amount written in major units into minor units of ``currency``.

    Accepts a string (``"100,000"``, ``"100.50"``, ``"1,000.5"``), an ``int``, or a ``Decimal``
    (JSON numbers are decoded as ``Decimal``, never float). Rejects negatives, exponents, NaN,
    malformed thousands separators and more decimals than the currency has.
    """
    code = currency_code(currency)
    places = CURRENCY_EXPONENTS[code]
    if isinstance(value, bool):
        raise MoneyError("amount must be a number, got a boolean")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise MoneyError(f"amount must be a finite number, got {value}")
        # Before formatting: "f" would write out every digit of 1E+1000000.
        if not -MAX_AMOUNT_CHARS < value.adjusted() < MAX_AMOUNT_CHARS:
            raise MoneyError("amount is implausibly large" if value.adjusted() > 0 else "amount has too many decimals")
        text = format(value, "f")
    elif isinstance(value, str):
        text = value
    elif isinstance(value, float):
        # A float has already lost exactness; the caller must decode JSON with Decimal.
        raise MoneyError("amount must not be a binary float")
    else:
        raise MoneyError(f"amount must be a string or a number, got {type(value).__name__}")

    if len(text) > MAX_AMOUNT_CHARS:
        raise MoneyError(f"amount {text[:MAX_AMOUNT_CHARS]!r}... is longer than {MAX_AMOUNT_CHARS} characters")
    match = _AMOUNT_RE.match(text)
    if not match:
        raise MoneyError(f"amount {text!r} is not a plain positive number")
    integer_part = match.group("int").replace(",", "")
    fraction = match.group("frac") or ""
    if match.group("frac") is not None and fraction == "":
        raise MoneyError(f"amount {text!r} is not a plain positive number")
    significant_fraction = fraction.rstrip("0")
    if len(significant_fraction) > places:
        raise MoneyError(
            f"amount {text!r} has more decimals than {code} allows ({places})"
            if places
            else f"amount {text!r} has decimals but {code} has no minor unit"
        )
    minor = int(integer_part) * 10**places + (
        int(significant_fraction.ljust(places, "0")) if places and significant_fraction else 0
    )
    if minor > MAX_MINOR_AMOUNT:
        raise MoneyError(f"amount {text!r} is implausibly large")
    return minor


def to_minor(amount: Decimal | int | str, currency: str) -> int:
    """Major units (exact) to minor units; the same strict rules as ``parse_major_amount``."""
    return parse_major_amount(amount, currency)


def from_minor(amount_minor: int, currency: str) -> Decimal:
    """Minor units to an exact ``Decimal`` in major units (``100050, "KES"`` -> ``1000.50``)."""
    places = exponent(currency)
    return (Decimal(amount_minor) / (Decimal(10) ** places)).quantize(Decimal(1).scaleb(-places))


def scale_units(amount: int, *, from_exponent: int, to_exponent: int, currency: str) -> int:
    """Convert an integer count between two unit sizes of one currency, exactly.

    Used where a provider's unit differs from ISO's (Stripe keeps ISK two-decimal although ISO
    says zero; Daraja takes whole shillings). A conversion that would drop a non-zero digit is
    an error, never a rounding.
    """
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise MoneyError(f"amount must be an integer count of units, got {amount!r}")
    if amount < 0:
        raise MoneyError(f"amount must not be negative, got {amount}")
    if to_exponent >= from_exponent:
        result = amount * 10 ** (to_exponent - from_exponent)
    else:
        factor = 10 ** (from_exponent - to_exponent)
        if amount % factor:
            raise MoneyError(f"{amount} is not a whole number of {currency} units of 10^{-to_exponent}")
        result = amount // factor
    if result > MAX_MINOR_AMOUNT:
        raise MoneyError(f"amount {amount} is implausibly large")
    return result


def format_minor(amount_minor: int, currency: str) -> str:
    """Human format with thousands separators: ``UGX 100,000``, ``KES 1,000.50``."""
    places = exponent(currency)
    major = from_minor(amount_minor, currency)
    return f"{currency_code(currency)} {major:,.{places}f}"


# How each parent-page language writes an amount (CLDR's currency patterns): French puts the code
# after the figure and groups with a narrow no-break space; Swahili writes it as English does.
_LANGUAGE_FORMATS = {"fr": ("\u202f", ",", "{number}\u00a0{code}")}


def format_minor_for(amount_minor: int, currency: str, language: str) -> str:
    """``format_minor`` in a language's way: ``450 000 UGX`` in French, ``UGX 450,000`` otherwise."""
    spec = _LANGUAGE_FORMATS.get((language or "en").split("-")[0])
    if spec is None:
        return format_minor(amount_minor, currency)
    group, decimal, pattern = spec
    places = exponent(currency)
    number = f"{from_minor(amount_minor, currency):,.{places}f}".replace(",", "\0").replace(".", decimal).replace("\0", group)
    return pattern.format(number=number, code=currency_code(currency))
