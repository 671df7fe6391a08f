"""Payload filters, written once: the filter type, what a condition means, and parsing it.

A filter is a conjunction of ``field == value`` conditions; a list value means any of. Qdrant
matches strings, integers and booleans exactly (``true`` is not 1), a payload list matches when any
element does, and a float - which has no exact match in Qdrant - matches by the range [v, v].
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
    values = wanted(value)
    return [v for v in values if not isinstance(v, float)], [v for v in values if isinstance(v, float)]


def value_matches(v: Any, want: list) -> bool:
    """Qdrant's match of one payload value: same type (a bool is not an int) and equal; a list
    payload matches when any element does."""
    if isinstance(v, list):
        return any(value_matches(x, want) for x in v)
    return any(type(v) is type(w) and v == w for w in want)


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
        return value
    raise FilterError(f"where.{key}: values must be strings, numbers or booleans, not {type(value).__name__}")


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
    return Filter(equals)


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
    return Filter(out)


def where_dict(items: list[str] | None) -> dict:
    """``--where`` options as the JSON form the parameter models carry."""
    return dict(parse_where(items).equals)
