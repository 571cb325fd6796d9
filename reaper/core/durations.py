"""Durations as operators write them: "500ms", "30s", "5m", "24h", "1d" or plain seconds."""

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: object) -> float:
    """Seconds for a duration string or number; ValueError when it is neither."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return _seconds(value)
    if not isinstance(value, str):
        raise ValueError(value)
    match = _PATTERN.match(value)
    if not match:
        raise ValueError(value)
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _seconds(number: int | float) -> float:
    try:
        seconds = float(number)
    except OverflowError:
        raise ValueError(number) from None
    if not math.isfinite(seconds) or seconds < 0:  # TOML and env text can both spell nan and inf
        raise ValueError(number)
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, for logs and `reaper config`."""
    if seconds == 0:
        return "0s"
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds * 1000 == int(seconds * 1000):
        return f"{int(seconds * 1000)}ms"
    return f"{seconds}s"
