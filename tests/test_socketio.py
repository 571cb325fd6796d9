"""reaper.signaling.servers.socketio: channel names and packet layouts of the socket.io Redis adapter (pure)."""

import json

import pytest

from reaper.core.config import load_config
from reaper.core.errors import ConfigError
from reaper.signaling.socketio import (Answer, Channels, broadcast_packet, disconnect_request, fetch_request, pack,
                             parse_answer, unpack)


@pytest.mark.parametrize("prefix, namespace, broadcast, requests, responses", [
    ("socket.io", "/", "socket.io#/#", "socket.io-request#/#", "socket.io-response#/#"),
    ("voip-sig", "/calls", "voip-sig#/calls#", "voip-sig-request#/calls#", "voip-sig-response#/calls#"),
])
def test_channel_names_follow_prefix_and_namespace(prefix, namespace, broadcast, requests, responses):
    channels = Channels.of(prefix, namespace)
    assert (channels.broadcast, channels.request, channels.response) == (broadcast, requests, responses)
    assert channels.response_for("reaper-1a2b") == responses + "reaper-1a2b#"


def test_a_broadcast_is_msgpack_uid_packet_opts_to_every_room():
    packet = broadcast_packet("/", "guestLeft", {"userId": "guest_1", "reason": "orphan"})
    assert unpack(packet) == [
        "reaper",
        {"type": 2, "data": ["guestLeft", {"userId": "guest_1", "reason": "orphan"}], "nsp": "/"},
        {"rooms": [], "except": [], "flags": {}},
    ]


@pytest.mark.parametrize("event", ["connect", "disconnect", "disconnecting", "connect_error"])
def test_reserved_event_names_are_refused(event):
    with pytest.raises(ValueError, match="reserved event name"):
        broadcast_packet("/", event, {})


def test_a_disconnect_request_is_json_with_the_rooms_and_close():
    body = disconnect_request(["Qx7b2M1dZk_AAAB", "other"])
    assert body.startswith(b"{")  # the adapter reads a body starting with "{" as JSON
    assert json.loads(body) == {"type": 4, "opts": {"rooms": ["Qx7b2M1dZk_AAAB", "other"], "except": []},
                                "close": True}
    assert json.loads(disconnect_request(["a"], close=False))["close"] is False


def test_a_fetch_request_carries_uid_request_id_and_rooms():
    body = fetch_request("reaper-1a2b", "f00d", ["Qx7b2M1dZk_AAAB"])
    assert json.loads(body) == {"uid": "reaper-1a2b", "requestId": "f00d", "type": 5,
                                "opts": {"rooms": ["Qx7b2M1dZk_AAAB"], "except": []}}


SOCKET = {"id": "Qx7b", "handshake": {"headers": {"cookie": "secret"}}, "rooms": ["Qx7b"], "data": {}}


@pytest.mark.parametrize("raw, answer", [
    (json.dumps({"requestId": "r1", "sockets": [SOCKET]}).encode(), Answer("r1", frozenset({"Qx7b"}))),
    (json.dumps({"requestId": "r1", "sockets": []}).encode(), Answer("r1", frozenset())),
    (pack({"requestId": "r1", "sockets": [SOCKET]}), Answer("r1", frozenset({"Qx7b"}))),
    # an answer to this request, but its sockets cannot be read: malformed, not "none"
    (json.dumps({"requestId": "r1"}).encode(), Answer("r1", None)),
    (json.dumps({"requestId": "r1", "sockets": "Qx7b"}).encode(), Answer("r1", None)),
    (json.dumps({"requestId": "r1", "sockets": [{"id": 7}]}).encode(), Answer("r1", None)),
    (json.dumps({"requestId": "r1", "sockets": ["Qx7b"]}).encode(), Answer("r1", None)),
    # no answer at all
    (b"", None), (b"{", None), (b"{\"requestId\": \"r1\"", None), (b"\xc1", None), (b"\xff\xfe", None),
    (b"[1, 2]", None), (json.dumps(["r1"]).encode(), None), (pack([1]), None), (b"null", None),
    (json.dumps({"requestId": 5, "sockets": []}).encode(), None),
    (json.dumps({"sockets": [SOCKET]}).encode(), None),
    (b"{" + b"[" * 100_000 + b"}", None),
    (pack({"requestId": "r1", "sockets": []}) + b"\xc0", None),  # trailing bytes
    (pack({"requestId": "r1", "sockets": [SOCKET], 7: "x"}), None),  # a key notepack never writes
    (bytes.fromhex("82a9") + b"requestId" + bytes.fromhex("a2") + b"r1" + bytes.fromhex("a7") + b"sockets"
     + bytes.fromhex("91" * 70 + "90"), None),  # nested past MAX_DEPTH
    ("{\"requestId\": \"r1\", \"sockets\": []}".encode("utf-16"), None),
])
def test_parse_answer(raw, answer):
    assert parse_answer(raw) == answer


# -- the [notify] settings the protocol depends on (docs/configuration.md) ---------------------------------

@pytest.mark.parametrize("key, value, expected", [
    ("notify.namespace", "calls", 'starting with "/"'),
    ("notify.namespace", "/ca#lls", 'starting with "/"'),
    ("notify.namespace", "", 'starting with "/"'),
    ("notify.channel_prefix", "", 'non-empty key'),
    ("notify.channel_prefix", "socket io", 'non-empty key'),
    ("notify.event", "disconnect", "does not reserve"),
    ("notify.event", " ", "does not reserve"),
    ("notify.event", 5, "a string"),
])
def test_bad_notify_values_stop_with_the_key_named(key, value, expected):
    with pytest.raises(ConfigError, match=expected) as raised:
        load_config(None, {}, {key: value})
    assert raised.value.key == key


def test_good_notify_values_are_taken_as_written():
    notify = load_config(None, {"REAPER_NOTIFY_NAMESPACE": "/calls"},
                         {"notify.channel_prefix": "voip-sig", "notify.event": "guestGone"}).notify
    assert (notify.namespace, notify.channel_prefix, notify.event) == ("/calls", "voip-sig", "guestGone")
    assert Channels.of(notify.channel_prefix, notify.namespace).request == "voip-sig-request#/calls#"
