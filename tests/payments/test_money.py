from decimal import Decimal

import pytest

from core.money import (
    CURRENCY_EXPONENTS,
    MoneyError,
    format_minor,
    from_minor,
    parse_major_amount,
    scale_units,
    to_minor,
)


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("100,000", "UGX", 100_000),
        ("100.50", "KES", 10_050),
        ("1,000.5", "KES", 100_050),
        ("100", "KES", 10_000),
        ("0.01", "USD", 1),
        ("1,234,567.89", "NGN", 123_456_789),
        ("100.00", "UGX", 100),  # exact: trailing zeros lose nothing
        ("12.345", "BHD", 12_345),  # three-decimal currency
        (1000, "UGX", 1000),
        (Decimal("1500.00"), "KES", 150_000),
        ("5", "ugx", 5),  # currency codes are case-insensitive
    ],
)
def test_amounts_are_parsed_exactly(text, currency, minor):
    assert parse_major_amount(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "currency", "message"),
    [
        ("12.345", "KES", "amount '12.345' has more decimals than KES allows (2)"),
        ("100.5", "UGX", "amount '100.5' has decimals but UGX has no minor unit"),
        ("1e3", "KES", "amount '1e3' is not a plain positive number"),
        ("-5", "KES", "amount '-5' is not a plain positive number"),
        ("", "KES", "amount '' is not a plain positive number"),
        ("NaN", "KES", "amount 'NaN' is not a plain positive number"),
        ("1,00", "KES", "amount '1,00' is not a plain positive number"),
        ("1,0000", "KES", "amount '1,0000' is not a plain positive number"),
        ("1.000,50", "KES", "amount '1.000,50' is not a plain positive number"),
        (" 100", "KES", "amount ' 100' is not a plain positive number"),
        ("100.", "KES", "amount '100.' is not a plain positive number"),
        (".5", "KES", "amount '.5' is not a plain positive number"),
        ("007", "KES", "amount '007' is not a plain positive number"),
        ("+5", "KES", "amount '+5' is not a plain positive number"),
        ("100", "XYZ", "unknown currency 'XYZ'"),
        ("100", "US", "currency must be a 3-letter ISO 4217 code, got 'US'"),
        (10.5, "KES", "amount must not be a binary float"),
        (True, "KES", "amount must be a number, got a boolean"),
        (Decimal("NaN"), "KES", "amount must be a finite number, got NaN"),
        (Decimal("-1"), "KES", "amount '-1' is not a plain positive number"),
        ("10000000000000000", "KES", "amount '10000000000000000' is implausibly large"),
    ],
)
def test_ambiguous_or_inexact_amounts_are_rejected(text, currency, message):
    with pytest.raises(MoneyError) as excinfo:
        parse_major_amount(text, currency)
    assert str(excinfo.value) == message


def test_currency_table_has_iso_exponents():
    assert {code: CURRENCY_EXPONENTS[code] for code in ("UGX", "KES", "NGN", "ETB", "USD", "RWF", "XOF", "JPY", "BHD", "ISK")} == {
        "UGX": 0, "KES": 2, "NGN": 2, "ETB": 2, "USD": 2, "RWF": 0, "XOF": 0, "JPY": 0, "BHD": 3, "ISK": 0,
    }  # fmt: skip


def test_to_and_from_minor_round_trip():
    assert to_minor(Decimal("1000.50"), "KES") == 100_050
    assert from_minor(100_050, "KES") == Decimal("1000.50")
    assert str(from_minor(100_000, "UGX")) == "100000"
    assert str(from_minor(5, "KES")) == "0.05"


def test_scale_units_refuses_to_drop_digits():
    # Daraja counts whole shillings; ISO counts cents.
    assert scale_units(1500, from_exponent=0, to_exponent=2, currency="KES") == 150_000
    assert scale_units(150_000, from_exponent=2, to_exponent=0, currency="KES") == 1500
    with pytest.raises(MoneyError):
        scale_units(150_050, from_exponent=2, to_exponent=0, currency="KES")
    with pytest.raises(MoneyError):
        scale_units(-1, from_exponent=0, to_exponent=2, currency="KES")


def test_format_minor():
    assert format_minor(100_000, "UGX") == "UGX 100,000"
    assert format_minor(100_050, "KES") == "KES 1,000.50"
