"""Which user ids may ever reach a service or MongoDB (docs/design.md, the cascade "One gate"). Pure.

A *guest id* starts with ``guest_id_prefix`` and is one safe path segment: it can name nothing
but one guest, whatever route it is put into. Anything else (a registered user's id, ``..``,
``cleanup-all``, text with a slash or a control character) gets no external call.
"""

import unicodedata
from urllib.parse import quote

from reaper.core.names import encode_name

NOT_A_GUEST_ID = "not_a_guest_id"  # the reason such an id is counted and logged under
# The auth-service's own routes under /auth/guest/: never a guest's name, whatever the prefix.
RESERVED = frozenset({"cleanup", "cleanup-all", "health"})
MAX_BYTES = 256  # far longer than any id a signaling server makes (guest_6f1c2a9e)
_TOO_LONG = f"longer than {MAX_BYTES} bytes"
# Control, format (bidi overrides, zero-width) and line/paragraph separators: a name with one
# of these could not be logged or routed as it reads.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def problem(user_id: object, prefix: str) -> str | None:
    """Why ``user_id`` is not a guest id; None when it is one."""
    if not isinstance(user_id, str) or not user_id:
        return "empty or not text"
    if not prefix or not user_id.startswith(prefix) or user_id == prefix:
        return f"does not start with the guest id prefix {prefix!r}" if prefix else "no guest id prefix"
    if user_id in (".", "..") or user_id in RESERVED:
        return "names a route, not a guest"
    if "/" in user_id or "\\" in user_id:
        return "has a path separator"
    if user_id.isascii():  # the usual case, checked in C: a byte a character; printable is 0x20-0x7e
        if len(user_id) > MAX_BYTES:
            return _TOO_LONG
        return None if user_id.isprintable() else "has a control character"
    if len(encode_name(user_id)) > MAX_BYTES:
        return _TOO_LONG
    if any(_unsafe(ch) for ch in user_id):  # Cc covers the C0 and C1 controls and DEL
        return "has a control or format character"
    return None


def _unsafe(ch: str) -> bool:
    # A lone surrogate stands for a byte of a name that is no UTF-8 (reaper/core/names.py): it goes
    # out percent-encoded, as that byte.
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def path_segment(user_id: str) -> str:
    """The id as one path segment: every byte but the unreserved ones percent-encoded."""
    return quote(encode_name(user_id), safe="")


def prefix_problem(prefix: str) -> str | None:
    """Why no id with this prefix could be a guest id (config load refuses it); None when fine."""
    if not prefix:
        return "a non-empty prefix (with an empty one every id would be a guest's)"
    sample = problem(prefix + "x", prefix)
    return None if sample is None else f"a prefix a guest id can start with (this one {sample})"
