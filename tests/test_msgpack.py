"""reaper.signaling.socketio's MessagePack (the msgpack package, as reaper sets it up): byte-exact
against the MessagePack spec, hostile input refused with a reason, and in agreement with
notepack.io, the codec the socket.io Redis adapter uses (real Node.js)."""

import random

import msgpack
import pytest

from reaper.signaling import socketio
from reaper.signaling.socketio import MAX_DEPTH, MsgpackError, broadcast_packet, pack, unpack
from support.signaling import Codec

# (value, its MessagePack encoding in hex): the smallest form, as the spec asks for
CANONICAL = [
    (None, "c0"), (False, "c2"), (True, "c3"),
    (0, "00"), (127, "7f"), (128, "cc80"), (255, "ccff"), (256, "cd0100"), (65535, "cdffff"),
    (65536, "ce00010000"), (2**32 - 1, "ceffffffff"), (2**32, "cf0000000100000000"),
    (2**64 - 1, "cfffffffffffffffff"),
    (-1, "ff"), (-32, "e0"), (-33, "d0df"), (-128, "d080"), (-129, "d1ff7f"), (-32768, "d18000"),
    (-32769, "d2ffff7fff"), (-2**31, "d280000000"), (-2**31 - 1, "d3ffffffff7fffffff"),
    (-2**63, "d38000000000000000"),
    (1.5, "cb3ff8000000000000"), (-0.25, "cbbfd0000000000000"), (float("inf"), "cb7ff0000000000000"),
    ("", "a0"), ("a", "a161"), ("é", "a2c3a9"), ("x" * 31, "bf" + "78" * 31),
    ("x" * 32, "d920" + "78" * 32), ("x" * 256, "da0100" + "78" * 256),
    ("x" * 65536, "db00010000" + "78" * 65536),
    (b"", "c400"), (b"\x00\xff", "c40200ff"), (b"\x01" * 256, "c50100" + "01" * 256),
    (b"\x02" * 65536, "c600010000" + "02" * 65536),
    ([], "90"), ([1, [2]], "92019102"), ([0] * 15, "9f" + "00" * 15), ([0] * 16, "dc0010" + "00" * 16),
    ([0] * 65536, "dd00010000" + "00" * 65536),
    ({}, "80"), ({"a": 1}, "81a16101"), ({"x": 1, b"k": None}, "82a17801c4016bc0"),
    ({f"k{i:02}": i for i in range(16)}, "de0010" + "".join(
        "a3" + f"k{i:02}".encode().hex() + f"{i:02x}" for i in range(16))),
]

# Encodings a writer may choose although they are not the smallest: read all the same
READ_ONLY = [
    ("ca3fc00000", 1.5), ("cc05", 5), ("cd0005", 5), ("d005", 5), ("d3ffffffffffffffff", -1),
    ("d90161", "a"), ("da000161", "a"), ("dc0000", []), ("dd00000001c0", [None]), ("de0000", {}),
    ("c50000", b""), ("c600000001ff", b"\xff"), ("cb7ff8000000000000", "nan"),
]

MALFORMED = [
    ("", "truncated"), ("c1", r"reserved type byte \(0xc1\)"), ("d40000", "ext type"),
    ("c70000", "ext type"), ("d6ff00000000", "ext type"), ("c9ffffffff01", "ext type"),
    ("c700ff", "ext type"),
    ("a261", "truncated"), ("d9", "truncated"), ("cd01", "truncated"), ("cb3ff8", "truncated"),
    ("ddffffffff", "longer than the packet"), ("dfffffffff00", "longer than the packet"),
    ("c6ffffffff", "truncated"), ("dbffffffff61", "truncated"), ("9201", "truncated"),
    ("a1ff", "not valid UTF-8"), ("a3eda080", "not valid UTF-8"), ("819001c0", "map key"),
    ("818001c0", "map key"), ("0000", "1 trailing bytes"), ("91" * (MAX_DEPTH + 1) + "90", "nesting"),
    ("91" * 5000 + "90", "nesting"),  # past msgpack's own bound (1024): its StackError, said the same
    # map keys are str or bytes only: what notepack writes for a JavaScript object
    ("8101c0", "map key"), ("81c0c0", "map key"), ("81c3c0", "map key"),
    ("81cb3ff8000000000000c0", "map key"),
]


@pytest.mark.parametrize("value, encoded", CANONICAL, ids=lambda x: repr(x)[:24])
def test_packs_the_smallest_form_and_reads_it_back(value, encoded):
    assert pack(value).hex() == encoded
    assert unpack(bytes.fromhex(encoded)) == value


@pytest.mark.parametrize("encoded, value", READ_ONLY)
def test_reads_every_width_a_writer_may_choose(encoded, value):
    decoded = unpack(bytes.fromhex(encoded))
    assert decoded != decoded if value == "nan" else decoded == value
    assert type(decoded) is (float if value == "nan" else type(value))


def test_tuples_pack_as_arrays_and_bytes_likes_as_bin():
    assert pack((1, 2)) == pack([1, 2])
    assert pack(bytearray(b"ab")) == pack(memoryview(b"ab")) == pack(b"ab")
    assert unpack(bytearray(pack([True]))) == [True]


@pytest.mark.parametrize("encoded, message", MALFORMED, ids=lambda x: x[:16])
def test_malformed_input_raises_msgpack_error_saying_why(encoded, message):
    with pytest.raises(MsgpackError, match=message):
        unpack(bytes.fromhex(encoded))


def test_a_huge_declared_length_fails_at_once_without_allocating():
    # 4 billion array items, map entries, string, bin or ext bytes declared in a 6-byte input
    for marker in ("dd", "df", "db", "c6", "c9"):
        with pytest.raises(MsgpackError, match="truncated|longer than the packet|ext type"):
            unpack(bytes.fromhex(marker + "ffffffff00"))


def test_nesting_up_to_max_depth_is_read():
    deepest: list = []
    for _ in range(MAX_DEPTH):
        deepest = [deepest]
    assert unpack(bytes.fromhex("91" * MAX_DEPTH + "90")) == deepest  # the innermost at MAX_DEPTH
    assert unpack(bytes.fromhex("81a161" * MAX_DEPTH + "80"))  # maps count the same way
    with pytest.raises(MsgpackError, match="nesting"):
        unpack(bytes.fromhex("81a161" * (MAX_DEPTH + 1) + "80"))


def test_a_packet_over_max_packet_bytes_is_refused_before_it_is_read(monkeypatch):
    monkeypatch.setattr(socketio, "MAX_PACKET_BYTES", 16)
    assert unpack(bytes.fromhex("c40e" + "00" * 14)) == bytes(14)
    with pytest.raises(MsgpackError, match="17 bytes is over 16"):
        unpack(bytes.fromhex("c40f" + "00" * 15))


def test_str_and_bytes_map_keys_are_read():
    assert unpack(bytes.fromhex("82a16101c4016202")) == {"a": 1, b"b": 2}


@pytest.mark.parametrize("value, error, message", [
    (object(), TypeError, "can not serialize 'object'"), ({1, 2}, TypeError, "'set'"),
    (2**64, OverflowError, "out of range"), (-2**63 - 1, OverflowError, "out of range"),
    ("\ud800", UnicodeEncodeError, "surrogates not allowed"), ({"a": 1.0j}, TypeError, "'complex'"),
])
def test_unpackable_values_raise_the_library_error(value, error, message):
    # only reaper's own values are packed (broadcast_packet): a failure here is a bug, not input
    with pytest.raises(error, match=message):
        pack(value)


def test_the_c_extension_does_the_work():
    # the speed and the iterative (stack-safe) decoder are its; the pure-Python fallback has neither
    assert msgpack.Unpacker.__module__ == "msgpack._cmsgpack"


def test_msgpack_error_is_a_value_error():
    assert issubclass(MsgpackError, ValueError)


def test_every_truncation_of_a_valid_packet_is_refused():
    packet = broadcast_packet("/", "guestLeft", {"userId": "guest_é", "reason": "orphan", "n": [1.5, -300, None]})
    for end in range(len(packet)):
        with pytest.raises(MsgpackError):
            unpack(packet[:end])


def test_random_and_mutated_bytes_give_a_value_or_msgpack_error_only():
    rng = random.Random(6)
    packet = bytearray(broadcast_packet("/", "guestLeft", {"userId": "guest_1", "reason": "orphan"}))
    samples = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(3000)]
    for _ in range(3000):
        mutated = bytearray(packet)
        mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        samples.append(bytes(mutated))
    outcomes = {"value": 0, "error": 0}
    for sample in samples:
        try:
            unpack(sample)
            outcomes["value"] += 1
        except MsgpackError:
            outcomes["error"] += 1
    assert outcomes["value"] > 0 and outcomes["error"] > 0  # both paths were really exercised


# -- against notepack.io, the adapter's own codec (Node.js) -----------------------------------

@pytest.fixture
def notepack(socketio_harness):
    codec = Codec()
    yield codec
    codec.stop()


def as_json(value):
    """How msgpack.js shows a decoded value: a Buffer as {"$bin": hex}."""
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    return value


# Values both sides spell the same way: string map keys, integers JavaScript holds exactly,
# no integral floats (JavaScript packs 2.0 as the integer 2).
SHARED = [
    None, True, False, 0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**53 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**53 + 1, 1.5, -1e-300, 0.1,
    "", "guest_6f1c2a9e", "Gäst 🎧", "x" * 31, "x" * 32, "y" * 300, "z" * 70000,
    b"", b"\x00\x01\xfe\xff", b"\x07" * 300, b"\x08" * 70000,
    [], [1, "a", [None, [True]]], list(range(15)), list(range(16)), list(range(70000)),
    {}, {"userId": "guest_1", "reason": "heartbeat_timeout"}, {f"k{i}": i for i in range(16)},
    {"rooms": [], "except": [], "flags": {"volatile": True}},
]


@pytest.mark.parametrize("value", SHARED, ids=lambda x: repr(x)[:24])
def test_notepack_and_reaper_write_the_same_bytes_and_read_each_other(notepack, value):
    ours = pack(value)
    theirs = notepack.ask({"encode": as_json(value)})["hex"]
    assert ours.hex() == theirs
    assert notepack.ask({"decode": ours.hex()}) == {"value": as_json(value)}
    assert unpack(bytes.fromhex(theirs)) == value


def test_notepack_reads_the_broadcast_packet_as_the_adapter_expects(notepack):
    packet = broadcast_packet("/calls", "guestLeft", {"userId": "guest_1", "reason": "orphan"})
    assert notepack.ask({"decode": packet.hex()}) == {"value": [
        "reaper",
        {"type": 2, "data": ["guestLeft", {"userId": "guest_1", "reason": "orphan"}], "nsp": "/calls"},
        {"rooms": [], "except": [], "flags": {}},
    ]}


def test_a_date_from_notepack_is_an_ext_type_we_refuse_clearly(notepack):
    # notepack packs a JavaScript Date as the timestamp ext type; nothing in our packets is one
    hex_date = "d6ff" + (1_700_000_000).to_bytes(4, "big").hex()
    assert "value" in notepack.ask({"decode": hex_date})  # notepack reads it ...
    with pytest.raises(MsgpackError, match="ext type"):  # ... we refuse it by name
        unpack(bytes.fromhex(hex_date))
