"""Redis names (keys and hash fields) as text, and back, byte for byte.

Names in Redis are bytes. The signaling service writes UTF-8, but a sweep reads whatever is
there and must not crash on it (SPEC §1): a name is decoded with ``surrogateescape``, so bytes
that are not UTF-8 become lone surrogates, and every client reaper opens (``PACKER``) sends such
text back as those very bytes. Whatever reaper removes is then exactly the key or field it read.

Text from inside a JSON value (a userId or socketId) is no name read from Redis: one holding a
lone surrogate (JSON's "\\ud800") names nothing the signaling service can have written, and
records.py reads such a value as absent (``is_text``).
"""

from redis._parsers import Encoder
from redis.connection import HiredisRespSerializer, PythonRespSerializer
from redis.utils import HIREDIS_AVAILABLE

_ERRORS = "surrogateescape"
_BUFFER_CUTOFF = 6000  # redis-py's own: larger arguments are sent as buffers of their own


def decode_name(name: bytes) -> str:
    """A name read from Redis, as text that encode_name() turns back into the same bytes."""
    return name.decode("utf-8", _ERRORS)


def encode_name(value: str) -> bytes:
    """The bytes of a name that decode_name() made (plain UTF-8 for any other text)."""
    return value.encode("utf-8", _ERRORS)


def is_text(value: str) -> bool:
    """Is this Unicode text, with no lone surrogate? (All ASCII is: the usual case, cheaply.)"""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _NamesAsRead:
    """redis-py's command packer, but a str argument holding a name that is no UTF-8 goes out
    as the bytes it was read as. hiredis's packer (when installed) knows only strict UTF-8, so
    such a command is packed again by redis-py's own, with surrogateescape: no cost otherwise."""

    def __init__(self):
        self._exact = PythonRespSerializer(_BUFFER_CUTOFF, Encoder("utf-8", _ERRORS, False).encode)
        self._fast = HiredisRespSerializer() if HIREDIS_AVAILABLE else self._exact

    def pack(self, *args):
        try:
            return self._fast.pack(*args)
        except UnicodeEncodeError:
            return self._exact.pack(*args)


# Stateless: one for every connection. encoding_errors: a cluster's key slot of such a name is
# that of the bytes sent.
PACKER = _NamesAsRead()
CLIENT_OPTIONS = {"command_packer": PACKER, "encoding_errors": _ERRORS}
