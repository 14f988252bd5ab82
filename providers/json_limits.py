"""JSON decoding with limits: the one decoder for bodies that come from outside (webhooks, the API).

``json.loads`` alone lets a small body cost a lot: a number such as ``1e1000000`` becomes a
Decimal that a later ``int()`` or ``format()`` expands to a million digits; 50,000 nested
brackets raise ``RecursionError``; ``\\u0000`` and lone surrogates decode into strings that
PostgreSQL refuses. Here every refusal happens while decoding, before any conversion, at a cost
proportional to the body (which the caller has already bounded):

- the body must be UTF-8 (no other encoding is guessed), with no NUL, as an escape or raw;
- no lone UTF-16 surrogate escapes (they cannot be stored as UTF-8);
- numbers: at most ``MAX_NUMBER_CHARS`` characters, decimal exponents within
  ``MAX_EXPONENT``, no ``NaN`` or ``Infinity``; fractions become ``Decimal`` (never float);
- nesting at most ``MAX_DEPTH`` objects and arrays deep, and at most ``MAX_VALUES`` values.

A refusal raises ``JsonRefused`` (a ``ValueError``) whose message is safe to send back.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

# Deeper than any provider's payload (Stripe's events nest about 6 levels), far below the
# interpreter's recursion limit, so nothing downstream can recurse too deep.
MAX_DEPTH = 32
# A JSON number longer than this is no amount, id or timestamp any provider sends (a 64-bit
# integer has 20 characters), and converting it could be costly.
MAX_NUMBER_CHARS = 40
# Commas and opening brackets in the body: an upper bound of its values. Parsing (and walking)
# 5,000 values costs a few milliseconds at most; provider payloads have a few hundred.
MAX_VALUES = 5_000
# Decimal exponents beyond this would expand to more digits than MAX_NUMBER_CHARS allows.
MAX_EXPONENT = 40

# A NUL escape, or a UTF-16 surrogate escape that is not half of a pair. Run on text in which
# every escaped backslash (\\) was blanked out first, so "\\u0000" (a backslash, then "u0000")
# is not taken for an escape.
# One literal prefix (\u) for every branch, so the engine skips ahead with a fast search.
_UNSTORABLE_ESCAPE = re.compile(
    r"\\u(?:0000"
    r"|[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2}\\u)[dD][c-fC-F][0-9a-fA-F]{2})"
)


class JsonRefused(ValueError):
    """The body is not JSON we accept; the message says why and is safe to show."""


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise JsonRefused(f"a number has more than {MAX_NUMBER_CHARS} characters")
    return int(text)


def _parse_fraction(text: str) -> Decimal:
    if len(text) > MAX_NUMBER_CHARS:
        raise JsonRefused(f"a number has more than {MAX_NUMBER_CHARS} characters")
    try:
        value = Decimal(text)
    except InvalidOperation as exc:  # the scanner only hands over JSON numbers; belt and braces
        raise JsonRefused("a number is malformed") from exc
    # adjusted() is the exponent of the leading digit: cheap, and it bounds every later expansion
    # (0E-999999999 too, whose "f" format would be a billion zeros).
    if not -MAX_EXPONENT <= value.adjusted() <= MAX_EXPONENT:
        raise JsonRefused(f"a number's exponent is beyond ±{MAX_EXPONENT}")
    return value


def _refuse_constant(name: str):
    raise JsonRefused(f"{name} is not a number")


def _nesting_exceeds(value: Any, limit: int) -> bool:
    # Iterative, so it cannot itself recurse too deep; visits each container once.
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


def loads_limited(body: bytes | str) -> Any:
    """Decode ``body`` as JSON within the limits of this module, or raise ``JsonRefused``."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonRefused(f"the body is not valid UTF-8 (byte {exc.start})") from exc
    else:
        text = body
    if "\x00" in text:
        raise JsonRefused("the body contains a NUL character")
    # Values are separated by commas or open a container: counting both (in C) bounds how many
    # objects parsing could build, whatever their nesting.
    if text.count(",") + text.count("[") + text.count("{") > MAX_VALUES:
        raise JsonRefused(f"more than {MAX_VALUES} values")
    if "\\u" in text:  # only bodies with \u escapes pay for the scan
        scanned = text.replace("\\\\", "  ") if "\\\\" in text else text
        if _UNSTORABLE_ESCAPE.search(scanned):
            raise JsonRefused("a string contains a NUL character or a lone UTF-16 surrogate")
    try:
        value = json.loads(
            text, parse_int=_parse_int, parse_float=_parse_fraction, parse_constant=_refuse_constant
        )
    except RecursionError as exc:  # raised cleanly by the C scanner, long before the stack ends
        raise JsonRefused(f"nesting deeper than {MAX_DEPTH} levels") from exc
    except JsonRefused:
        raise
    except ValueError as exc:  # json.JSONDecodeError: its message names line and column only
        raise JsonRefused(str(exc)) from exc
    # Counting brackets (in C) bounds the depth from above: only bodies with many of them are
    # walked, and the walk visits each value once.
    if (type(value) is dict or type(value) is list) and text.count("{") + text.count("[") > MAX_DEPTH:
        if _nesting_exceeds(value, MAX_DEPTH):
            raise JsonRefused(f"nesting deeper than {MAX_DEPTH} levels")
    return value
