"""The comparison programs of bench/sweep.py, each run as its own process so that its wall time and
peak RSS are measured exactly like `reaper run --once`'s. Each prints one JSON line of figures.

    python bench/sweep_workloads.py floor URL [stdlib|orjson|msgspec] [pipelined|serial]
    python bench/sweep_workloads.py naive URL
    python bench/sweep_workloads.py httpx BASE_URL COUNT CONCURRENCY
"""

import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

CONN_PATTERN = "guest_connection:*"
ONLINE = "users:online"
SCAN_COUNT = 1000


# -- the floor: the whole job of a sweep (records judged, orphans found), writing nothing ---------

# How the floor judges: reaper's rules (docs/design.md, "Staleness") with the bench's timing.
@dataclass(frozen=True)
class Judging:
    connection_timeout_s: float = 3600.0
    ping_interval_s: float = 1200.0
    max_missed_pings: int = 3
    clock_skew_s: float = 5.0
    max_future_s: float = 300.0
    guest_id_prefix: str = "guest_"


@dataclass
class FloorCounts:
    records: int = 0  # values read
    live: int = 0
    stale: int = 0
    malformed: int = 0
    entries: int = 0  # users:online fields read
    registered: int = 0
    orphans: int = 0  # guest entries whose socket has no record (or whose user has none)
    exists_sent: int = 0  # EXISTS asked for entries naming a socket the record pass did not see
    socketless: int = 0  # guest entries naming no socket


_EPOCH_MS_THRESHOLD = 1e11
_MAX_EPOCH_S = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()
CONN = b"guest_connection:"


def _careful_timestamp(value) -> float | None:
    """reaper's parse_timestamp (reaper/core/records.py) in short: ISO-8601 text (naive = UTC)
    or an epoch number in s or ms (also as text), within 1970..9999; None when unreadable."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return _epoch(float(text)) if text[4:5] != "-" else _iso(text)
        except ValueError:
            return _iso(text)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return _epoch(float(value))
        except OverflowError:
            return None
    return None


def _epoch(number: float) -> float | None:
    if not math.isfinite(number) or number < 0:
        return None
    seconds = number / 1000.0 if number >= _EPOCH_MS_THRESHOLD else number
    return seconds if seconds <= _MAX_EPOCH_S else None


def _iso(text: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        seconds = parsed.timestamp()
    except (ValueError, OverflowError):
        return None
    return seconds if 0 <= seconds <= _MAX_EPOCH_S else None


def careful_record(raw: bytes) -> tuple[str | None, float | None, float | None]:
    """(userId, heartbeat, pong) of any value; None for what is missing or unreadable."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None, None, None
    if not isinstance(data, dict):
        return None, None, None
    user_id = data.get("userId")
    user_id = user_id if isinstance(user_id, str) and user_id else None
    beat, pong = data.get("lastHeartbeat"), data.get("lastPongReceived")
    heartbeat = _careful_timestamp(beat)
    pong_s = heartbeat if pong is None or pong == "" else _careful_timestamp(pong)
    return user_id, heartbeat, pong_s


def careful_entry(field: bytes, raw: bytes, prefix: bytes) -> tuple[bool, str | None]:
    """(is a guest, socketId) of any users:online field, by reaper's rules."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return field.startswith(prefix), None
    socket_id = data.get("socketId")
    return (data.get("isGuest") is True or field.startswith(prefix),
            socket_id if isinstance(socket_id, str) and socket_id else None)


class Parser:
    """Turns raw records and entries into what a sweep judges; one subclass per JSON library.
    ``records`` and ``entries`` take a whole batch: the per-record loop is the hot path."""

    name = "?"

    def records(self, values: list) -> list:
        """[(userId or None, heartbeat s or None, pong s or None) or None for a missing key]"""
        raise NotImplementedError

    def entries(self, fields: list, values: list, prefix: bytes) -> list:
        """[(is a guest, socketId or None)]"""
        raise NotImplementedError


class StdlibParser(Parser):
    name = "stdlib"

    def __init__(self):
        self._loads = json.loads

    def records(self, values):
        loads, fromiso, out = self._loads, datetime.fromisoformat, []
        for raw in values:
            if raw is None:
                out.append(None)
                continue
            try:
                data = loads(raw)
                user_id, beat, pong = data["userId"], data["lastHeartbeat"], data["lastPongReceived"]
                moment = fromiso(beat)
                if moment.tzinfo is None or user_id.__class__ is not str:
                    raise ValueError("not as the signaling service writes it")
                heartbeat = moment.timestamp()
                out.append((user_id or None, heartbeat,
                            heartbeat if pong == beat else fromiso(pong).timestamp()))
            except Exception:  # anything unusual (also a naive or missing pong): the careful path
                out.append(careful_record(raw))
        return out

    def entries(self, fields, values, prefix):
        loads, out = self._loads, []
        for field, raw in zip(fields, values):
            try:
                data = loads(raw)
                socket_id = data.get("socketId")
                if socket_id.__class__ is not str:
                    socket_id = None
                out.append((data.get("isGuest") is True or field.startswith(prefix), socket_id or None))
            except Exception:
                out.append(careful_entry(field, raw, prefix))
        return out


class OrjsonParser(StdlibParser):
    name = "orjson"

    def __init__(self):
        import orjson
        self._loads = orjson.loads


class MsgspecParser(Parser):
    """A Struct holding only what a sweep judges; RFC 3339 timestamps with an offset decoded
    in C. Anything else (naive or other ISO text, a number as text, a wrong type) fails
    validation and goes to the careful path, so the rules stay reaper's."""

    name = "msgspec"

    def __init__(self):
        from typing import Annotated

        import msgspec
        aware = Annotated[datetime, msgspec.Meta(tz=True)]

        class Record(msgspec.Struct):
            userId: str
            lastHeartbeat: aware | float
            lastPongReceived: aware | float | None = None

        class Entry(msgspec.Struct):
            socketId: str | None = None
            isGuest: bool | None = None

        self._record = msgspec.json.Decoder(Record).decode
        self._entry = msgspec.json.Decoder(Entry).decode
        self._errors = (msgspec.DecodeError, msgspec.ValidationError)

    def records(self, values):
        decode, errors, out = self._record, self._errors, []
        for raw in values:
            if raw is None:
                out.append(None)
                continue
            try:
                data = decode(raw)
            except errors:
                out.append(careful_record(raw))
                continue
            beat, pong = data.lastHeartbeat, data.lastPongReceived
            if beat.__class__ is datetime and (pong is None or pong.__class__ is datetime):
                heartbeat = beat.timestamp()
                out.append((data.userId or None, heartbeat,
                            heartbeat if pong is None or pong == beat else pong.timestamp()))
            else:  # epoch numbers: s or ms, range
                out.append((data.userId or None, _careful_timestamp(beat),
                            _careful_timestamp(beat if pong is None else pong)))
        return out

    def entries(self, fields, values, prefix):
        decode, errors, out = self._entry, self._errors, []
        for field, raw in zip(fields, values):
            try:
                data = decode(raw)
            except errors:
                out.append(careful_entry(field, raw, prefix))
                continue
            out.append((data.isGuest is True or field.startswith(prefix), data.socketId or None))
        return out


PARSERS = {"stdlib": StdlibParser, "orjson": OrjsonParser, "msgspec": MsgspecParser}


def available_parsers() -> dict:
    out = {}
    for name, cls in PARSERS.items():
        try:
            out[name] = cls()
        except ImportError:
            pass
    return out


def floor(url: str, parser_name: str = "stdlib", reader: str = "pipelined",
          judging: Judging = Judging()) -> dict:
    """The least any Python sweep does for the whole job, reading only: every record read, parsed
    and judged once; every online entry read and parsed once; orphans found the cheapest correct
    way: the record pass remembers the keys it read, and only an entry naming a socket it did not
    see (or one whose record it could not name a userId for) is confirmed, by EXISTS pipelined
    per page. Guest entries naming no socket need the record pass's userIds: only when there are
    some does the floor read the records' userIds again (none in the seed data).
    ``reader``: "pipelined" (Redis reads the next page while Python parses this one) or
    "serial" (one request at a time: what a plain redis-py loop does)."""
    import redis
    client = redis.Redis.from_url(url)
    parser = PARSERS[parser_name]()
    started, cpu_started = time.perf_counter(), time.process_time()
    counts = floor_counts(client, parser, judging, pipelined=reader == "pipelined")
    return {"work_s": time.perf_counter() - started, "work_cpu_s": time.process_time() - cpu_started,
            "parser": parser.name, "reader": reader, **counts.__dict__}


def floor_counts(client, parser: Parser, judging: Judging, pipelined: bool = True) -> FloorCounts:
    seconds, micros = client.time()
    floor = FloorJudge(parser, judging, seconds + micros / 1e6)
    counts = floor.counts
    reading = _PipelinedPages(client) if pipelined else _SerialPages(client)
    for keys, values in reading.records():
        floor.records(keys, values)
    counts.records = counts.live + counts.stale + counts.malformed
    for fields, values in reading.entries():
        maybe = floor.entries(fields, values)
        if maybe:  # on the client's own connection: the reader's may have a page in flight
            pipe = client.pipeline(transaction=False)
            for key in maybe:
                pipe.exists(key)
            counts.orphans += sum(not found for found in pipe.execute())
            counts.exists_sent += len(maybe)
    counts.socketless = len(floor.socketless)
    if floor.socketless:  # their users' records: read the userIds again (only when there are such entries)
        owned = set()
        for _, values in _SerialPages(client).records():
            owned.update(p[0].encode() for p in parser.records(values) if p and p[0])
        counts.orphans += len(floor.socketless - owned)
    return counts


class FloorJudge:
    """The floor's work on a page, no Redis: records parsed and judged, their keys remembered;
    entries parsed, and those that may be orphans named (bench/judge_cost.py times these alone)."""

    def __init__(self, parser: Parser, judging: Judging, now: float):
        self.parser, self.judging, self.now = parser, judging, now
        self.counts, self.seen, self.unowned, self.socketless = FloorCounts(), set(), set(), set()
        self.prefix = judging.guest_id_prefix.encode()

    def records(self, keys: list, values: list) -> None:
        counts, judging, now, unowned = self.counts, self.judging, self.now, self.unowned
        limit = judging.connection_timeout_s + judging.clock_skew_s
        beat_future = now + judging.max_future_s
        pong_future = now + judging.max_future_s + judging.clock_skew_s
        interval, missed = judging.ping_interval_s, judging.max_missed_pings
        pong_now = now - judging.clock_skew_s
        add = self.seen.add
        for key, parsed in zip(keys, self.parser.records(values)):
            if parsed is None:  # gone since SCAN
                continue
            add(key)
            user_id, heartbeat, pong = parsed
            if user_id is None or heartbeat is None or pong is None:
                counts.malformed += 1
                if user_id is None:  # its entry, if any, is an orphan
                    unowned.add(key)
            elif heartbeat > beat_future or pong > pong_future or heartbeat < 0 or pong < 0:
                counts.malformed += 1
            elif now - heartbeat > limit or (pong_now - pong) // interval >= missed:
                counts.stale += 1
            else:
                counts.live += 1

    def entries(self, fields: list, values: list) -> list:
        """The record keys to look up: entries naming a socket the records did not show."""
        counts, seen, unowned, maybe = self.counts, self.seen, self.unowned, []
        for field, (is_guest, socket_id) in zip(fields, self.parser.entries(fields, values, self.prefix)):
            if not is_guest:
                counts.registered += 1
            elif socket_id is None:
                self.socketless.add(field)
            else:
                key = CONN + socket_id.encode("utf-8", "surrogatepass")
                if key in unowned:
                    counts.orphans += 1
                elif key not in seen:
                    maybe.append(key)
        counts.entries += len(fields)
        return maybe


def _scan(client):
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, match=CONN_PATTERN, count=SCAN_COUNT)
        if keys:
            yield keys
        if cursor == 0:
            return


class _SerialPages:
    """Pages of (keys, values) and (fields, values), one request at a time."""

    def __init__(self, client):
        self._client = client

    def records(self):
        for keys in _scan(self._client):
            yield keys, self._client.mget(keys)

    def entries(self):
        cursor = 0
        while True:
            cursor, page = self._client.hscan(ONLINE, cursor, count=SCAN_COUNT)
            yield list(page), list(page.values())
            if cursor == 0:
                return


class _PipelinedPages:
    """The same pages, each handed out only once the request for the next one is on its way: Redis
    scans and reads page i+1 while the caller parses page i, on one connection and one thread."""

    def __init__(self, client):
        self._client = client

    def records(self):
        with self._connection() as (send, read):
            send(("SCAN", 0, "MATCH", CONN_PATTERN, "COUNT", SCAN_COUNT))
            cursor, keys = read()
            page = None
            while True:
                more = cursor != b"0"
                ask = ([("MGET", *keys)] if keys else []) + (
                    [("SCAN", cursor, "MATCH", CONN_PATTERN, "COUNT", SCAN_COUNT)] if more else [])
                if ask:
                    send(*ask)
                if page:
                    yield page
                page = (keys, read()) if keys else None
                if not more:
                    break
                cursor, keys = read()
            if page:
                yield page

    def entries(self):
        with self._connection() as (send, read):
            send(("HSCAN", ONLINE, 0, "COUNT", SCAN_COUNT))
            while True:
                cursor, flat = read()
                more = cursor != b"0"
                if more:
                    send(("HSCAN", ONLINE, cursor, "COUNT", SCAN_COUNT))
                yield flat[0::2], flat[1::2]
                if not more:
                    return

    @contextmanager
    def _connection(self):
        pool = self._client.connection_pool
        conn = pool.get_connection()
        try:
            yield (lambda *commands: conn.send_packed_command(conn.pack_commands(commands))), conn.read_response
        except BaseException:
            conn.disconnect()  # replies may be in flight: never hand this connection back as it is
            raise
        finally:
            pool.release(conn)


def naive(url: str, connection_timeout_s: float) -> dict:
    """What the in-process manager did: KEYS, then one GET per guest, one DEL and one HDEL per
    stale guest, each a round trip of its own."""
    import redis
    client = redis.Redis.from_url(url)
    started, cpu_started = time.perf_counter(), time.process_time()
    now = _redis_now(client)
    reaped = 0
    for key in client.keys(CONN_PATTERN):
        raw = client.get(key)
        if raw is None:
            continue
        data = json.loads(raw)
        beat = datetime.fromisoformat(data["lastHeartbeat"]).timestamp()
        if now - beat > connection_timeout_s:
            client.delete(key)
            client.hdel(ONLINE, data["userId"])
            reaped += 1
    return {"work_s": time.perf_counter() - started, "work_cpu_s": time.process_time() - cpu_started,
            "reaped": reaped}


def _redis_now(client) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def plain_httpx(base_url: str, count: int, concurrency: int) -> dict:
    """The same auth-service DELETEs as a cascade, as plainly as httpx allows: one pooled client,
    ``concurrency`` threads."""
    import httpx
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=base_url, limits=limits, timeout=5.0) as client:
        def delete(i: int) -> int:
            return client.delete(f"/auth/guest/guest_{i:08x}").status_code

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            statuses = list(pool.map(delete, range(count)))
    return {"work_s": time.perf_counter() - started, "ok": sum(s == 200 for s in statuses)}


def main(argv: list[str]) -> None:
    mode, args = argv[0], argv[1:]
    if mode == "floor":
        result = floor(args[0], *args[1:3])
    elif mode == "naive":
        result = naive(args[0], float(args[1]))
    elif mode == "httpx":
        result = plain_httpx(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
