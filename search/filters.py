"""Parse ``--where key=value`` filters into the store's filter type."""

from __future__ import annotations

import json
import re

from indexer.store import Filter

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


class FilterError(ValueError):
    pass


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
        value = parse_value(raw)
        if key in equals:
            prev = equals[key]
            equals[key] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            equals[key] = value
    return Filter(equals)


def filter_from_dict(d: dict | None) -> Filter:
    """The HTTP API's ``{"field": value}`` form."""
    if not d:
        return Filter({})
    for k in d:
        if not isinstance(k, str) or not _KEY.match(k):
            raise FilterError(f"bad filter field name {k!r}")
    return Filter(dict(d))
