"""The command packer every reaper connection uses: a name read as no UTF-8 goes back to Redis as
the bytes it was read as (core/names.py says how such names are held as text)."""

from redis.connection import Encoder, HiredisRespSerializer, PythonRespSerializer
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis

from reaper.core.names import ERRORS

_BUFFER_CUTOFF = 6000  # redis-py's own: larger arguments are sent as buffers of their own


class _NamesAsRead:
    """redis-py's command packer, but a str argument holding a name that is no UTF-8 goes out
    as the bytes it was read as. hiredis's packer (when installed) knows only strict UTF-8, so
    such a command is packed again by redis-py's own, with surrogateescape: no cost otherwise.

    A command of plain str, bytes and numbers named in one word (every one a sweep sends: a page
    of a thousand keys, a batch of takes) goes straight to hiredis's C packer: redis-py's own
    wrapper first looks at every argument in Python, a tenth of a millisecond per such command.
    Anything else (a name of several words, a bytearray, a value redis-py refuses) takes
    redis-py's way, which says what is wrong."""

    def __init__(self):
        self._exact = PythonRespSerializer(_BUFFER_CUTOFF, Encoder("utf-8", ERRORS, False).encode)
        self._fast = HiredisRespSerializer() if HIREDIS_AVAILABLE else self._exact
        self._direct = hiredis.pack_command if HIREDIS_AVAILABLE else None

    def pack(self, *args):
        name = args[0]
        if self._direct is not None and type(name) is str and " " not in name:
            try:
                return [self._direct(args)]
            except (TypeError, UnicodeEncodeError):
                pass  # redis-py's way below: the same bytes, or its own error
        try:
            return self._fast.pack(*args)
        except UnicodeEncodeError:
            return self._exact.pack(*args)


# Stateless: one for every connection. encoding_errors: a cluster's key slot of such a name is
# that of the bytes sent.
PACKER = _NamesAsRead()
CLIENT_OPTIONS = {"command_packer": PACKER, "encoding_errors": ERRORS}
