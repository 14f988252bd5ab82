"""Shared plumbing of the property-based (hypothesis) tests of hostile input: the budget profiles,
structure-aware mutations of JSON payloads, and the answer counts reported at the end of a run.

Budgets: the profile ``ci`` (the default, part of ``make test``) runs a few dozen examples per
test; ``make fuzz`` selects ``fuzz`` (``HYPOTHESIS_PROFILE=fuzz``, ``FUZZ_EXAMPLES`` examples per
test, 2,000 by default).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("FUZZ_CI_EXAMPLES", "40")),
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "2000")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"

# surface -> answer status -> count, over the whole run (reported by tests/conftest.py).
ANSWERS: dict[str, Counter] = defaultdict(Counter)


def count(surface: str, status: int | str) -> None:
    ANSWERS[surface][status] += 1


def write_report() -> Path | None:
    if not ANSWERS:
        return None
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "fuzz-answers.json"
    path.write_text(json.dumps({surface: {str(k): v for k, v in sorted(c.items(), key=str)} for surface, c in sorted(ANSWERS.items())}, indent=2))
    return path


# --- JSON with tokens json.dumps cannot write ----------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is: numbers such as 1e1000000, deep nesting, broken syntax."""

    text: str


def dump(value: Any, *, ascii_only: bool = True) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=ascii_only)}: {dump(v, ascii_only=ascii_only)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dump(v, ascii_only=ascii_only) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=ascii_only)


def encode(text: str) -> bytes:
    # Lone surrogates (written raw when ascii_only is off) become bytes that are not UTF-8.
    return text.encode("utf-8", "surrogatepass")


# --- Hostile values ------------------------------------------------------------------------------

LONG_LENGTHS = [63, 64, 65, 100, 101, 127, 128, 129, 254, 255, 256, 257, 1000, 5000]

hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
    st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800", "\udfff", "x\ud83d", "\U0001f600", "‮", "١٢٣", "²",
                     "NaN", "Infinity", "-0", "1e3", "0x10", "1,00", "100,000.00", "9" * 30, "' OR 1=1 --",
                     "../../etc/passwd", "%00", "\\u0000", "null", "true"]),
    st.builds(lambda n, c: c * n, st.sampled_from(LONG_LENGTHS), st.sampled_from(["x", "9", "é", "\U0001f600"])),
)
hostile_number = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 10**15, 10**15 + 1, 10**16, 10**19, 2**63, 2**64]),
    st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-(10**18), max_value=10**18),
    st.sampled_from([Raw("1e1000000"), Raw("1e999999999"), Raw("0e-999999999"), Raw("-1e-7"), Raw("1E+2"),
                     Raw("9" * 45), Raw("1." + "0" * 50), Raw("NaN"), Raw("Infinity"), Raw("-Infinity"),
                     Raw("1.5e300"), Raw("00"), Raw("-0.0"), Raw("1e40"), Raw("1e41")]),
)
hostile_structure = st.one_of(
    st.builds(lambda n: Raw("[" * n + "]" * n), st.sampled_from([31, 32, 33, 100, 5000, 40_000])),
    st.builds(lambda n: Raw('{"a":' * n + "1" + "}" * n), st.sampled_from([31, 32, 33, 1000, 20_000])),
    st.builds(lambda n: Raw("[" + ",".join(["0"] * n) + "]"), st.sampled_from([100, 10_000, 10_001, 60_000])),
    st.just(Raw("[" * 100_000)),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                 lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
                 max_leaves=10),
)
hostile_value = st.one_of(hostile_text, hostile_number, hostile_structure, st.none(), st.booleans())


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _set(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, *rest = path
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _set(value[head], tuple(rest), new)
    return copy


def _delete(value: Any, path: tuple) -> Any:
    if not path:
        return value
    if len(path) == 1:
        copy = dict(value) if isinstance(value, dict) else list(value)
        del copy[path[0]]
        return copy
    head, *rest = path
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _delete(value[head], tuple(rest))
    return copy


def _get(value: Any, path: tuple) -> Any:
    for part in path:
        value = value[part]
    return value


_ID_KEY = re.compile(r"(?:^|_|[a-z])(?:id|Id|ID|ref|Ref|reference|Reference)(?:$|_|[A-Z])|^id$|^key$")
fresh_id = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=6, max_size=24)


def _fresh_ids(draw, value: Any, overrides: dict[str, st.SearchStrategy]) -> Any:
    for path in _paths(value):
        if not path or not isinstance(path[-1], str):
            continue
        current = _get(value, path)
        key = path[-1]
        if key in overrides:
            value = _set(value, path, draw(overrides[key]))
        elif _ID_KEY.search(key) and isinstance(current, str) and current:
            value = _set(value, path, draw(fresh_id))
        elif _ID_KEY.search(key) and isinstance(current, int) and not isinstance(current, bool):
            value = _set(value, path, draw(st.integers(min_value=1, max_value=10**12)))
    return value


@st.composite
def mutated_json(draw, payload: Any, fresh: dict[str, st.SearchStrategy] | None = None) -> bytes:
    """``payload`` with one to three structure-aware mutations (a field's value replaced by a
    hostile one or a plausible one, removed, wrapped, a field added), often with fresh ids (so a
    mutant is a new event, not a duplicate), sometimes then damaged as bytes. ``fresh`` gives the
    values some id fields must take (an M-Pesa CheckoutRequestID this service started)."""
    value = payload
    if draw(st.booleans()):
        value = _fresh_ids(draw, value, fresh or {})
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(value)
        path = draw(st.sampled_from(paths))
        operation = draw(st.sampled_from(["plausible", "plausible", "replace", "replace", "replace", "delete", "wrap",
                                          "add", "retype"]))
        if operation == "plausible":
            # A value of the same kind, so many mutants stay valid and reach the worker (202).
            current = _get(value, path)
            if isinstance(current, bool) or current is None:
                new = draw(st.booleans())
            elif isinstance(current, (int, Decimal)):
                new = draw(st.one_of(st.integers(min_value=0, max_value=10**9), st.decimals(min_value=0, max_value=10**6, places=2)))
            elif isinstance(current, str):
                new = draw(st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "Zs"]), min_size=1, max_size=30))
            else:
                new = current
            value = _set(value, path, new)
        elif operation == "replace":
            value = _set(value, path, draw(hostile_value))
        elif operation == "delete" and path:
            value = _delete(value, path)
        elif operation == "wrap":
            value = _set(value, path, draw(st.sampled_from([[_get(value, path)], {"value": _get(value, path)}])))
        elif operation == "add":
            target = _get(value, path)
            if isinstance(target, dict):
                value = _set(value, path, {**target, draw(hostile_text): draw(hostile_value)})
        elif operation == "retype":
            current = _get(value, path)
            retyped = str(current) if not isinstance(current, str) else draw(st.one_of(hostile_number, st.just(None)))
            value = _set(value, path, retyped)
    text = dump(value, ascii_only=draw(st.booleans()))
    body = encode(text)
    damage = draw(st.sampled_from(["none"] * 8 + ["truncate", "insert", "nul", "bom", "invalid-utf8"]))
    if damage == "truncate" and body:
        body = body[: draw(st.integers(min_value=0, max_value=len(body) - 1))]
    elif damage == "insert":
        at = draw(st.integers(min_value=0, max_value=len(body)))
        body = body[:at] + draw(st.binary(min_size=1, max_size=8)) + body[at:]
    elif damage == "nul":
        at = draw(st.integers(min_value=0, max_value=len(body)))
        body = body[:at] + b"\x00" + body[at:]
    elif damage == "bom":
        body = b"\xef\xbb\xbf" + body
    elif damage == "invalid-utf8":
        body = body + b"\xff\xfe"
    return body
