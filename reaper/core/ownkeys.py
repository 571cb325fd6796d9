"""Reaper's own keys as the tools read them back (`reaper events`, `dead-letters`, `stats`).

Each must be of the type reaper writes, or absent (store.require_types: one line naming the key,
exit 2). A value in them is read as reaper writes it (``loads``), or not at all: the tool skips it.
"""

import json


def loads(raw: bytes | str):
    """A JSON value as reaper writes it: UTF-8, finite numbers, not nested past recursion.
    ValueError for anything else (non-UTF-8 bytes, NaN, Infinity, 1e999, a 5000-digit number)."""
    try:
        value = json.loads(raw, parse_constant=_refuse, parse_float=_finite)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return value


def _refuse(constant: str):
    raise ValueError(f"{constant} is no JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} is too large")
    return value
