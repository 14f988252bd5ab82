"""The query language of the v3 API (docs/reference/quickbooks.md §2.4), as far as the sync uses it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from fakes.quickbooks.wire import _Fault

# --- The query language (docs/reference/quickbooks.md §2.4) ------------------------------------------------------

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<str>'(?:\\.|[^'\\])*')|(?P<op><=|>=|!=|=|<|>)|(?P<punct>[(),*])|(?P<word>[A-Za-z_][\w.]*)|(?P<num>-?\d+(?:\.\d+)?))"
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if not match or match.end() == position:
            raise _Fault(400, "4000", "Error parsing query", f'QueryParserError: Encountered " at position {position}')
        position = match.end()
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        tokens.append((kind, value))
    return tokens


@dataclass
class _Query:
    entity: str
    count: bool = False
    conditions: list[tuple[str, str, Any]] = field(default_factory=list)
    order_by: str | None = None
    descending: bool = False
    start: int = 1
    max_results: int = 100


def _parse_query(text: str) -> _Query:
    tokens = _tokenize(text)
    pos = 0

    def peek(offset=0):
        return tokens[pos + offset] if pos + offset < len(tokens) else ("end", "")

    def take(expected_kind=None, expected_value=None):
        nonlocal pos
        kind, value = peek()
        if expected_kind and kind != expected_kind:
            raise _Fault(
                400, "4000", "Error parsing query", f"QueryParserError: expected {expected_kind}, got {value!r}"
            )
        if expected_value and value.upper() != expected_value:
            raise _Fault(
                400, "4000", "Error parsing query", f"QueryParserError: expected {expected_value}, got {value!r}"
            )
        pos += 1
        return value

    def literal():
        kind, value = peek()
        if kind == "str":
            take()
            return value
        if kind == "num":
            take()
            return Decimal(value)
        if kind == "word" and value.lower() in ("true", "false"):
            take()
            return value.lower() == "true"
        raise _Fault(400, "4000", "Error parsing query", f"QueryParserError: unexpected {value!r}")

    take("word", "SELECT")
    query = _Query(entity="")
    if peek()[1] == "*":
        take()
    elif peek()[1].upper() == "COUNT":
        take()
        take("punct", "(")
        take("punct", "*")
        take("punct", ")")
        query.count = True
    else:
        raise _Fault(400, "4000", "Error parsing query", "QueryParserError: projections are not supported")
    while peek()[1] == ",":  # "SELECT *, Sku FROM Item" (python-quickbooks' Item.all)
        take()
        take("word")
    take("word", "FROM")
    query.entity = take("word")
    if peek()[1].upper() == "WHERE":
        take()
        while True:
            name = take("word")
            kind, op = peek()
            if kind == "op":
                take()
                query.conditions.append((name, op, literal()))
            elif op.upper() in ("IN", "LIKE"):
                take()
                if op.upper() == "IN":
                    take("punct", "(")
                    values = [literal()]
                    while peek()[1] == ",":
                        take()
                        values.append(literal())
                    take("punct", ")")
                    query.conditions.append((name, "IN", values))
                else:
                    query.conditions.append((name, "LIKE", literal()))
            else:
                raise _Fault(400, "4000", "Error parsing query", f"QueryParserError: unexpected {op!r}")
            if peek()[1].upper() == "AND":
                take()
                continue
            if peek()[1].upper() == "OR":
                raise _Fault(400, "4000", "Error parsing query", "QueryParserError: OR is not supported")
            break
    while peek()[0] != "end":
        keyword = take("word").upper()
        if keyword in ("ORDERBY", "ORDER"):
            if keyword == "ORDER":
                take("word", "BY")
            query.order_by = take("word")
            if peek()[1].upper() in ("ASC", "DESC"):
                query.descending = take().upper() == "DESC"
        elif keyword == "STARTPOSITION":
            query.start = int(take("num"))
        elif keyword == "MAXRESULTS":
            query.max_results = min(int(take("num")), 1000)
        else:
            raise _Fault(400, "4000", "Error parsing query", f"QueryParserError: unexpected {keyword!r}")
    return query


def _field_value(obj: dict, name: str) -> Any:
    value: Any = obj
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if isinstance(value, dict) and "value" in value:
        value = value["value"]  # a reference (CustomerRef) compares by its id
    return value


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "IN":
        return any(_compare(actual, "=", item) for item in expected)
    if actual is None:
        return False
    if isinstance(actual, bool) or isinstance(expected, bool):
        return op == "=" and str(actual).lower() == str(expected).lower()
    numeric = re.compile(r"-?\d+(\.\d+)?$")
    if (
        isinstance(actual, (int, Decimal))
        or isinstance(expected, Decimal)
        or (numeric.match(str(actual)) and numeric.match(str(expected)))
    ):
        try:
            left, right = Decimal(str(actual)), Decimal(str(expected))
        except InvalidOperation:
            left, right = str(actual), str(expected)
    else:
        left, right = str(actual).lower(), str(expected).lower()
    if op == "LIKE":
        pattern = "^" + ".*".join(re.escape(part) for part in str(expected).lower().split("%")) + "$"
        return re.match(pattern, str(actual).lower()) is not None
    return {
        "=": left == right,
        "!=": left != right,
        "<": left < right,
        ">": left > right,
        "<=": left <= right,
        ">=": left >= right,
    }[op]
