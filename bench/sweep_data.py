"""Filling a private Redis with N guests shaped like docs/design.md, the data read, fast: a RESP stream into `redis-cli --pipe`.

Guest i has socket ``sk{i:010d}_AAAB`` and user ``guest_{i:08x}``; registered user j is ``user_{j:08x}``.
Stale guests are spread evenly through the key space (every 1/stale-th guest), stale by heartbeat
(``STALE_AGE_S`` old); the others beat ``LIVE_AGE_S`` ago. Either way the heartbeats are spread over
``BEAT_SPREAD_MS`` milliseconds, one apart, as a signaling server's heartbeats fall over its
interval: a million guests share ~25,000 timestamps, not one. Records carry a long TTL so that
nothing expires while the benchmark runs: expiry is not what is measured.
"""

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.guests import iso, record, redis_now  # noqa: E402

CONN = "guest_connection:"
ONLINE = "users:online"
TTL_S = 86_400
LIVE_AGE_S = 5
STALE_AGE_S = 2 * 3600
BEAT_SPREAD_MS = 25_000  # the signaling service's heartbeat interval, at its clock's resolution
# The reaper and the naive loop judge with these, so that a live guest (5 s old at the fill) is
# still live when a slow run reaches it minutes later, and a stale one (2 h old) is stale.
CONNECTION_TIMEOUT = "1h"
PING_INTERVAL = "20m"  # 3 missed pings = 1 h
CONNECTION_TIMEOUT_S = 3600
GUESTS_PER_CHUNK = 10_000
FIELDS_PER_HSET = 1_000
_MARK = re.compile(r"@@(\w+)@@")


def guests_and_rounds(argv, description: str, guests: int, rounds: int) -> argparse.Namespace:
    """--guests and --rounds of a benchmark that measures two sides in turn on one fill; each at least 1."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guests", type=int, default=guests)
    parser.add_argument("--rounds", type=int, default=rounds)
    args = parser.parse_args(argv)
    if args.guests < 1 or args.rounds < 1:
        parser.error("--guests and --rounds must be at least 1")
    return args


def socket_id(i: int) -> str:
    return f"sk{i:010d}_AAAB"


def user_id(i: int) -> str:
    return f"guest_{i:08x}"


def is_stale(i: int, fraction: float) -> bool:
    """Exactly floor(N * fraction) of guests 0..N-1, evenly spread."""
    return int((i + 1) * fraction) > int(i * fraction)


def stale_indices(n: int, fraction: float) -> list[int]:
    return [i for i in range(n) if is_stale(i, fraction)]


@dataclass(frozen=True)
class Dataset:
    guests: int
    stale: int
    registered: int
    record_bytes: int  # size of one record's JSON


class _Template:
    """A JSON text with @@NAME@@ holes, filled by plain string joins (1M json.dumps is too slow)."""

    def __init__(self, text: str):
        pieces = _MARK.split(text)
        self.literals, self.names = pieces[0::2], pieces[1::2]

    def fill(self, values: dict) -> str:
        out = [self.literals[0]]
        for name, literal in zip(self.names, self.literals[1:]):
            out.append(values[name])
            out.append(literal)
        return "".join(out)


def _record_template() -> _Template:
    rec = record("@@sid@@", "@@uid@@", "@@hb@@", name="Guest @@tail@@")
    return _Template(json.dumps(rec, separators=(",", ":")))


def _entry_template(is_guest: bool) -> _Template:
    value = {"userId": "@@uid@@", "status": "online", "socketId": "@@sid@@", "isGuest": is_guest}
    if not is_guest:
        value["name"] = "Registered"
    return _Template(json.dumps(value, separators=(",", ":")))


def _bulk(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def _commands(n: int, fraction: float, registered: int, now: float):
    """RESP chunks: SET ... EX per guest, HSET users:online with FIELDS_PER_HSET fields each."""
    chunk = []
    for _, command in each_command(n, fraction, registered, now):
        chunk.append(command)
        if len(chunk) > GUESTS_PER_CHUNK:
            yield b"".join(chunk)
            chunk = []
    yield b"".join(chunk)


def each_command(n: int, fraction: float, registered: int, now: float):
    """(the key it writes, RESP) of each command of the fill, in order: a cluster's fill sends
    each to the node serving its key."""
    rec, guest_entry, user_entry = _record_template(), _entry_template(True), _entry_template(False)
    beats = {stale: [iso(now - age - ms / 1000) for ms in range(BEAT_SPREAD_MS)]
             for stale, age in ((False, LIVE_AGE_S), (True, STALE_AGE_S))}
    ttl, online = str(TTL_S).encode(), ONLINE.encode()
    for start in range(0, n, GUESTS_PER_CHUNK):
        fields = []
        for i in range(start, min(n, start + GUESTS_PER_CHUNK)):
            sid, uid = socket_id(i), user_id(i)
            beat = beats[is_stale(i, fraction)][i * 7919 % BEAT_SPREAD_MS]  # neighbours beat at unrelated times
            value = rec.fill({"sid": sid, "uid": uid, "hb": beat, "tail": uid[-4:]})
            key = (CONN + sid).encode()
            yield key, _bulk(b"SET", key, value.encode(), b"EX", ttl)
            fields.append((uid, guest_entry.fill({"uid": uid, "sid": sid})))
        yield online, _hsets(fields)
    users = [(f"user_{j:08x}", user_entry.fill({"uid": f"user_{j:08x}", "sid": f"reg{j:010d}"}))
             for j in range(registered)]
    yield online, _hsets(users)


def _hsets(fields: list[tuple[str, str]]) -> bytes:
    out = []
    for start in range(0, len(fields), FIELDS_PER_HSET):
        args = [b"HSET", ONLINE.encode()]
        for name, value in fields[start:start + FIELDS_PER_HSET]:
            args += [name.encode(), value.encode()]
        out.append(_bulk(*args))
    return b"".join(out)


def fill(redis_proc, client, n: int, fraction: float, registered: int) -> Dataset:
    """FLUSHALL, then write the dataset through `redis-cli --pipe`; raises if Redis reported errors."""
    client.flushall()
    now = redis_now(client)
    pipe = RedisPipe(redis_proc)
    for chunk in _commands(n, fraction, registered, now):
        pipe.write(chunk)
    pipe.close()
    expected = n + 1  # the guest keys and users:online
    if client.dbsize() != expected or client.hlen(ONLINE) != n + registered:
        raise RuntimeError(f"fill: dbsize {client.dbsize()} (want {expected}), "
                           f"hlen {client.hlen(ONLINE)} (want {n + registered})")
    sample = client.get(CONN + socket_id(0))
    return Dataset(n, len(stale_indices(n, fraction)), registered, len(sample))


class RedisPipe:
    """`redis-cli --pipe` into one server: RESP written in, and on close() a RuntimeError if
    Redis reported an error."""

    def __init__(self, server):
        self._proc = subprocess.Popen(["redis-cli", "-h", server.host, "-p", str(server.port), "--pipe"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def write(self, resp: bytes) -> None:
        self._proc.stdin.write(resp)

    def close(self) -> None:
        self._proc.stdin.close()
        output = self._proc.stdout.read().decode(errors="replace")
        if self._proc.wait() != 0 or "errors: 0," not in output:
            raise RuntimeError(f"redis-cli --pipe failed: {output}")


@dataclass(frozen=True)
class Leftovers:
    stale_records: int  # stale guests' keys still there
    stale_entries: int  # stale guests' users:online entries still there
    live_records: int  # live guests' keys still there (all should be)
    online: int  # HLEN users:online

    def all_reaped(self, dataset: Dataset) -> bool:
        live = dataset.guests - dataset.stale
        return (self.stale_records == 0 and self.stale_entries == 0 and self.live_records == live
                and self.online == live + dataset.registered)


def leftovers(client, n: int, fraction: float) -> Leftovers:
    """What a sweep left: exact counts by pipelined EXISTS / HMGET over the known names."""
    stale = set(stale_indices(n, fraction))
    stale_records = _count_existing(client, [CONN + socket_id(i) for i in stale])
    entries = 0
    names = [user_id(i) for i in stale]
    for start in range(0, len(names), 5_000):
        entries += sum(v is not None for v in client.hmget(ONLINE, names[start:start + 5_000]))
    live_records = _count_existing(client, [CONN + socket_id(i) for i in range(n) if i not in stale])
    return Leftovers(stale_records, entries, live_records, client.hlen(ONLINE))


def _count_existing(client, keys: list[str]) -> int:
    return sum(client.exists(*keys[start:start + 5_000]) for start in range(0, len(keys), 5_000))
