"""Payload filters, written once: the filter type, what a condition means, and parsing it.

A filter is a conjunction of ``field == value`` conditions; a list value means any of. Qdrant
matches strings, integers and booleans exactly (``true`` is not 1), a payload list matches when any
element does, and a float - which has no exact match in Qdrant - matches by the range [v, v].

Numbers are compared by value: a filter ``0``, ``0.0`` or ``[0, 1]`` matches a payload ``0.0``.
That holds because numbers are canonical on both sides: a float with an integral value is the
integer, in a filter (:func:`check_value`) and in a stored payload (:func:`canonical_number`,
applied at ingest and import), so an integral number is always matched exactly, as an integer.
One condition holds values of one kind (strings, booleans or numbers): ``["sarc", 1]`` is an
error naming the field, not a silent zero matches.

Cost: an exact value is a hash lookup in Qdrant (1,000 strings cost ~0.3 ms on 250 documents),
but each non-integral float is a range condition, evaluated per point unless the field has a float
index (1,000 of them took 267 ms a search, and an 8 KB body could stall the server). Two defences:
the store gives a field a float index the first time a filter ranges over it
(``Store._index_float_fields``: 20 ranges fell from 67 ms to 1.6 ms a query), and a filter is
bounded by cost, not count: :data:`FILTER_BUDGET` units per filter, an exact value costing 1 and a
range :data:`RANGE_COST`.
Both store backends translate a filter through :func:`split_condition` (``indexer.store.base``), and
the columnar copy evaluates it with :func:`wanted` and :func:`value_matches` (``indexer.store.columns``),
so the two answer alike.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from indexer.core.errors import InputError

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


MAX_VALUE_CHARS = 1024
MAX_FILTER_FIELDS = 16  # conditions per filter
MAX_FILTER_VALUES = 1000  # any-of values per condition
FILTER_BUDGET = 1000  # cost units per filter (all its conditions together)
RANGE_COST = 50  # a non-integral float: a range condition (a scan of every point where the field has no float index)
INT64 = (-(2**63), 2**63 - 1)


class FilterError(InputError):
    pass


@dataclass
class Filter:
    """Conjunction of ``field == value`` conditions (values may be lists: any-of)."""

    equals: dict[str, Any] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not self.equals

    def describe(self, sep: str = ", ") -> str:
        """``topic=sports, year=2004`` for messages and plot titles."""
        return sep.join(f"{k}={v}" for k, v in self.equals.items()) or "all documents"


def wanted(value: Any) -> list:
    """The values one condition accepts (a list, tuple or set: any of them)."""
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


def split_condition(value: Any) -> tuple[list, list[float]]:
    """A condition's values matched exactly (strings, integers, booleans) and those matched by a
    [v, v] range (floats: values are validated upstream, finite, see :func:`check_value`)."""
    values = list({(type(v), v): v for v in wanted(value)}.values())  # each value once (True is not 1)
    return [v for v in values if not isinstance(v, float)], [v for v in values if isinstance(v, float)]


def canonical_number(value: Any) -> Any:
    """A payload value as stored: a float with an integral value in int64 is the integer (JSON
    ``3.0`` and ``3`` are one number), so integer filters match it exactly; lists element-wise."""
    if isinstance(value, float) and value.is_integer() and INT64[0] <= value <= INT64[1]:
        return int(value)
    if isinstance(value, list):
        return [canonical_number(v) for v in value]
    return value


def kind_of(value: Any) -> str:
    """A filter value's kind: ``string``, ``boolean`` or ``number`` (one condition holds one kind)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


def filter_cost(flt: "Filter") -> int:
    """What a filter costs the store, in units of one exact lookup (see the module docstring)."""
    cost = 0
    for value in flt.equals.values():
        exact, floats = split_condition(value)
        cost += len(exact) + RANGE_COST * len(floats)
    return cost


def check_filter(flt: "Filter", what: str = "where") -> "Filter":
    """A whole filter's rules: each condition one kind of value, the filter within its cost budget."""
    for key, value in flt.equals.items():
        kinds = sorted({kind_of(v) for v in wanted(value)})
        if len(kinds) > 1:
            raise FilterError(f"{what}.{key}: values of one type only (got {' and '.join(kinds)}); "
                              "a number never matches a string or a boolean")
    cost = filter_cost(flt)
    if cost > FILTER_BUDGET:
        raise FilterError(f"{what}: filter too costly ({cost} units; at most {FILTER_BUDGET}: each value costs 1, "
                          f"each non-integer number {RANGE_COST}, a range condition in the store)")
    return flt


def value_matches(v: Any, want: list) -> bool:
    """Qdrant's match of one payload value: same kind (a bool is not a number, numbers compare
    by value) and equal; a list payload matches when any element does."""
    if isinstance(v, list):
        return any(value_matches(x, want) for x in v)
    kind = kind_of(v)
    return any(kind_of(w) == kind and v == w for w in want)


def check_value(key: str, value):
    """A filter value Qdrant can match, or a FilterError naming the field: strings (<= 1,024
    characters), booleans, integers in int64, finite floats. A float with an integral value is
    the integer (JSON ``2.0`` is 2, as a payload ``2`` would be stored); other floats match by
    a [v, v] range in the store."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise FilterError(f"where.{key}: integer {value} is outside the 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(f"where.{key}: {value} is not a finite number")
        if value.is_integer() and INT64[0] <= value <= INT64[1]:
            return int(value)
        return value
    if isinstance(value, str):
        if len(value) > MAX_VALUE_CHARS:
            raise FilterError(f"where.{key}: value longer than {MAX_VALUE_CHARS} characters")
        if not is_encodable(value):
            raise FilterError(f"where.{key}: value holds a lone surrogate (not valid Unicode text)")
        return value
    raise FilterError(f"where.{key}: values must be strings, numbers or booleans, not {type(value).__name__}")


def is_encodable(text: str) -> bool:
    """Valid Unicode text: no lone surrogates (JSON ``"\\ud800"`` decodes to one; it cannot be
    written as UTF-8, so it would fail later, in the store, a job listing or a log)."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def parse_value(raw: str):
    """Numbers and booleans are typed (``witty=8`` matches the integer 8); anything else is a string."""
    if raw in ("true", "false"):
        return raw == "true"
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if re.fullmatch(r"-?\d+\.\d*", raw):
        return float(raw)
    if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
        return json.loads(raw)
    return raw


def parse_where(items: list[str] | None) -> Filter:
    """``["dataset=jokes", "tags=sarcastic"]`` -> Filter; repeated keys mean any-of."""
    equals: dict = {}
    for item in items or []:
        if "=" not in item:
            raise FilterError(f"malformed --where {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not _KEY.match(key):
            raise FilterError(f"malformed --where {item!r}: bad field name {key!r}")
        if raw == "":
            raise FilterError(f"malformed --where {item!r}: empty value")
        value = check_value(key, parse_value(raw))
        if key in equals:
            prev = equals[key]
            equals[key] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            equals[key] = value
    return check_filter(Filter(equals))


def filter_from_dict(d: dict | None, what: str = "where") -> Filter:
    """The JSON form ``{"field": value}`` (a list value: any of), as the API and parameter models
    carry it; ``what`` names the filter in errors (``where``, ``a``, ``b``)."""
    if not d:
        return Filter({})
    if len(d) > MAX_FILTER_FIELDS:
        raise FilterError(f"{what}: at most {MAX_FILTER_FIELDS} conditions (got {len(d)})")
    out = {}
    for k, v in d.items():
        if not isinstance(k, str) or not _KEY.match(k):
            raise FilterError(f"{what}: bad filter field name {k!r}")
        try:
            if isinstance(v, (list, tuple)):
                if not v or len(v) > MAX_FILTER_VALUES:
                    raise FilterError(f"where.{k}: give 1 to {MAX_FILTER_VALUES} values (got {len(v)})")
                out[k] = [check_value(k, x) for x in v]
            else:
                out[k] = check_value(k, v)
        except FilterError as e:
            raise FilterError(str(e).replace("where.", f"{what}.", 1)) from None
    return check_filter(Filter(out), what)


def where_dict(items: list[str] | None) -> dict:
    """``--where`` options as the JSON form the parameter models carry."""
    return dict(parse_where(items).equals)
