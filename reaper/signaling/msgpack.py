"""A small MessagePack codec: just what the socket.io Redis adapter's packets use (SPEC §8).

Types: nil, bool, int (-2**63 .. 2**64-1), float (64-bit out, 32/64-bit in), str (UTF-8),
bin (bytes), array (list; tuples pack as arrays) and map (dict). Ext types, timestamps
included, are refused. Written against the format spec
(https://github.com/msgpack/msgpack/blob/master/spec.md) and cross-checked with notepack.io,
the codec the adapter uses (tests/test_msgpack.py).

Decoding never trusts a length: a declared length longer than the bytes left, a reserved
byte, bad UTF-8, an unhashable map key, nesting deeper than MAX_DEPTH or trailing bytes all
raise MsgpackError, so malformed input from the wire fails fast instead of allocating or
looping.
"""

import struct

MAX_DEPTH = 64

_INT_FORMATS = (  # (lowest, highest, marker, struct format), smallest first
    (0, 0xFF, 0xCC, ">B"), (0, 0xFFFF, 0xCD, ">H"), (0, 0xFFFFFFFF, 0xCE, ">I"),
    (0, 2**64 - 1, 0xCF, ">Q"),
    (-0x80, 0x7F, 0xD0, ">b"), (-0x8000, 0x7FFF, 0xD1, ">h"), (-2**31, 2**31 - 1, 0xD2, ">i"),
    (-2**63, 2**63 - 1, 0xD3, ">q"),
)
_SIZED = {  # marker: (length struct format, kind)
    0xC4: (">B", "bin"), 0xC5: (">H", "bin"), 0xC6: (">I", "bin"),
    0xD9: (">B", "str"), 0xDA: (">H", "str"), 0xDB: (">I", "str"),
    0xDC: (">H", "array"), 0xDD: (">I", "array"),
    0xDE: (">H", "map"), 0xDF: (">I", "map"),
}
_SCALARS = {  # marker: struct format of a fixed-size number
    0xCA: ">f", 0xCB: ">d",
    0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
    0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
}
_EXT = frozenset((0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8))


class MsgpackError(ValueError):
    """The value cannot be packed, or the bytes are not MessagePack this codec reads."""


# -- packing -------------------------------------------------------------------------------

def packb(value) -> bytes:
    out = bytearray()
    _pack(value, out, 0)
    return bytes(out)


def _pack(value, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise MsgpackError(f"msgpack: nesting deeper than {MAX_DEPTH}")
    if value is None:
        out.append(0xC0)
    elif isinstance(value, bool):  # before int: bool is an int subclass
        out.append(0xC3 if value else 0xC2)
    elif isinstance(value, int):
        _pack_int(value, out)
    elif isinstance(value, float):
        out += b"\xcb" + struct.pack(">d", value)
    elif isinstance(value, str):
        _pack_str(value, out)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        _pack_header(len(value), out, None, (0xC4, 0xC5, 0xC6), "bin")
        out += value
    elif isinstance(value, (list, tuple)):
        _pack_header(len(value), out, 0x90, (None, 0xDC, 0xDD), "array")
        for item in value:
            _pack(item, out, depth + 1)
    elif isinstance(value, dict):
        _pack_header(len(value), out, 0x80, (None, 0xDE, 0xDF), "map")
        for key, item in value.items():
            _pack(key, out, depth + 1)
            _pack(item, out, depth + 1)
    else:
        raise MsgpackError(f"msgpack: cannot pack a {type(value).__name__}")


def _pack_int(value: int, out: bytearray) -> None:
    if -32 <= value <= 0x7F:  # positive / negative fixint
        out += struct.pack(">b" if value < 0 else ">B", value)
        return
    for lowest, highest, marker, fmt in _INT_FORMATS:
        if lowest <= value <= highest:
            out += bytes((marker,)) + struct.pack(fmt, value)
            return
    raise MsgpackError(f"msgpack: integer {value} is outside -2**63 .. 2**64-1")


def _pack_str(value: str, out: bytearray) -> None:
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise MsgpackError(f"msgpack: string is not valid Unicode: {exc}") from None
    _pack_header(len(data), out, 0xA0, (0xD9, 0xDA, 0xDB), "str", fix_limit=32)
    out += data


def _pack_header(length: int, out: bytearray, fix: int | None, sized: tuple, kind: str,
                 fix_limit: int = 16) -> None:
    """The type byte and length; ``sized`` are the 8-, 16- and 32-bit-length markers."""
    if fix is not None and length < fix_limit:
        out.append(fix | length)
        return
    for marker, fmt, limit in zip(sized, (">B", ">H", ">I"), (0xFF, 0xFFFF, 0xFFFFFFFF)):
        if marker is not None and length <= limit:
            out += bytes((marker,)) + struct.pack(fmt, length)
            return
    raise MsgpackError(f"msgpack: {kind} of {length} items/bytes is too long")


# -- unpacking -----------------------------------------------------------------------------

def unpackb(data: bytes):
    """The one value ``data`` holds; MsgpackError for anything else."""
    reader = _Reader(bytes(data))
    value = reader.value(0)
    if reader.pos != len(reader.data):
        raise MsgpackError(f"msgpack: {len(reader.data) - reader.pos} trailing bytes after the value")
    return value


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, count: int) -> bytes:
        if count > len(self.data) - self.pos:
            raise MsgpackError(f"msgpack: truncated: {count} bytes wanted at offset {self.pos}, "
                               f"{len(self.data) - self.pos} left")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def number(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def value(self, depth: int):
        if depth > MAX_DEPTH:
            raise MsgpackError(f"msgpack: nesting deeper than {MAX_DEPTH}")
        at = self.pos
        marker = self.take(1)[0]
        if marker <= 0x7F:
            return marker
        if marker >= 0xE0:
            return marker - 0x100
        if 0x80 <= marker <= 0x8F:
            return self.sized("map", marker & 0x0F, depth)
        if 0x90 <= marker <= 0x9F:
            return self.sized("array", marker & 0x0F, depth)
        if 0xA0 <= marker <= 0xBF:
            return self.sized("str", marker & 0x1F, depth)
        if marker in _SIZED:
            fmt, kind = _SIZED[marker]
            return self.sized(kind, self.number(fmt), depth)
        if marker in _SCALARS:
            return self.number(_SCALARS[marker])
        return self.constant(marker, at)

    def constant(self, marker: int, at: int):
        if marker in (0xC0, 0xC2, 0xC3):
            return {0xC0: None, 0xC2: False, 0xC3: True}[marker]
        if marker in _EXT:
            raise MsgpackError(f"msgpack: ext type (0x{marker:02x}) at offset {at} is not supported")
        raise MsgpackError(f"msgpack: reserved byte 0x{marker:02x} at offset {at}")

    def sized(self, kind: str, length: int, depth: int):
        if kind == "bin":
            return self.take(length)
        if kind == "str":
            return self.str(length)
        return self.array(length, depth) if kind == "array" else self.map(length, depth)

    def str(self, length: int) -> str:
        at = self.pos
        try:
            return self.take(length).decode("utf-8")
        except UnicodeDecodeError:
            raise MsgpackError(f"msgpack: string at offset {at} is not valid UTF-8") from None

    def array(self, length: int, depth: int) -> list:
        self.fits(length, 1)
        return [self.value(depth + 1) for _ in range(length)]

    def map(self, length: int, depth: int) -> dict:
        self.fits(length, 2)
        result = {}
        for _ in range(length):
            at = self.pos
            key = self.value(depth + 1)
            if isinstance(key, (list, dict)):
                raise MsgpackError(f"msgpack: map key at offset {at} is a {type(key).__name__}")
            result[key] = self.value(depth + 1)
        return result

    def fits(self, length: int, min_bytes_each: int) -> None:
        """Every item takes at least a byte: refuse a count the rest of the data cannot hold
        before building anything (a 5-byte input must not ask for 4 billion items)."""
        if length * min_bytes_each > len(self.data) - self.pos:
            raise MsgpackError(f"msgpack: truncated: {length} items declared at offset {self.pos}, "
                               f"{len(self.data) - self.pos} bytes left")
