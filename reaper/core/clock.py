"""Time as reaper writes it: a Unix time as an aware UTC datetime, and that datetime as the
ISO-8601 text the signaling service writes (milliseconds, Z). Values in, values out: the
clock itself is always handed in (Redis TIME, or an injected clock)."""

from datetime import datetime, timezone


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and Z, as the signaling service writes it."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
