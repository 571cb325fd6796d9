"""Redis names (keys and hash fields) as text, and back, byte for byte.

Names in Redis are bytes. The signaling service writes UTF-8, but a sweep reads whatever is
there and must not crash on it: a name is decoded with ``surrogateescape``, so bytes
that are not UTF-8 become lone surrogates, and every client reaper opens (store/packer.py) sends such
text back as those very bytes. Whatever reaper removes is then exactly the key or field it read.

Text from inside a JSON value (a userId or socketId) is no name read from Redis: one holding a
lone surrogate (JSON's "\\ud800") names nothing the signaling service can have written, and
records.py reads such a value as absent (``is_text``).
"""

ERRORS = "surrogateescape"


def decode_name(name: bytes) -> str:
    """A name read from Redis, as text that encode_name() turns back into the same bytes."""
    return name.decode("utf-8", ERRORS)


def encode_name(value: str) -> bytes:
    """The bytes of a name that decode_name() made (plain UTF-8 for any other text)."""
    return value.encode("utf-8", ERRORS)


def is_text(value: str) -> bool:
    """Is this Unicode text, with no lone surrogate? (All ASCII is: the usual case, cheaply.)"""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
