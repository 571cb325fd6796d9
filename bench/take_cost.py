"""What Redis spends on a guest of TAKE_GUEST (reaper/store/scripts.py), the script that takes a
stale guest's record, its users:online entry, its intent and its decision record in one step, or
of TAKE_ORPHAN (an orphan entry, its intent and decision record).

    python bench/take_cost.py                                  # TAKE_GUEST of this checkout
    python bench/take_cost.py --kind orphan                    # TAKE_ORPHAN
    python bench/take_cost.py --script OLD.lua [--kind ...]    # another version, to compare
    python bench/take_cost.py --witness digest                 # records compared by SHA-1 (held ones past 8 MB)
    python bench/take_cost.py --against OLD.lua --guests 1000000   # this TAKE_GUEST and another, interleaved

N guests are taken in batches of scripts.TAKE_BATCH, two calls in Redis at a time (as the sweep
takes them), from a private redis-server (never 6379); Redis's own time is read from INFO
commandstats (EVALSHA's usec: the scripts with every command they call). Four settings: with and
without an intent a guest (the services on or off), with and without an append-only file (what
a Redis with replicas or an AOF does for each write a script makes). Each is measured --rounds
times on a fresh fill; the best three are printed, in µs a guest.

With --against, TAKE_GUEST of this checkout and another version are measured on one fill of the
sweep benchmark's dataset (bench/sweep_data.py: --guests guests, 10 % stale, the stale ones
taken), batch by batch in turn (A B B A ...), each call timed by Redis's own counter: on a host
whose speed drifts, and at a scale where Redis's memory and not its CPU sets the cost (a take
at 1M guests costs ~1.5x what it costs at 20,000), the two see the same Redis at the same time.
"""

import argparse
import hashlib
import json
import statistics
import sys
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import sweep_data  # noqa: E402
from reaper.store import scripts, windowed  # noqa: E402
from support.guests import record  # noqa: E402
from support.redis_proc import RedisProcess  # noqa: E402

PREFIX = "guest_"
DECISION = json.dumps({"event": "reaped", "user_id": "guest_x", "reason": "heartbeat_timeout", "pad": "x" * 150})
INTENTS, DUE, ONLINE, EVENTS = "reaper:cascade:intents", "reaper:cascade:due", "users:online", "reaper:events"


def fill(client: redis.Redis, n: int, kind: str) -> list[bytes]:
    """N guests' users:online entries, and for TAKE_GUEST their records as the signaling service
    writes them (an orphan has none); the values the sweep read."""
    pipe, raws = client.pipeline(transaction=False), []
    for i in range(n):
        read = json.dumps({"userId": f"guest_{i}", "socketId": f"s{i}", "isGuest": True}).encode()
        pipe.hset(ONLINE, f"guest_{i}", read)
        if kind == "guest":
            read = json.dumps(record(f"s{i}", f"guest_{i}", 1.8e9)).encode()
            pipe.set(f"guest_connection:s{i}", read)
        raws.append(read)
    pipe.execute()
    return raws


def calls(raws: list[bytes], kind: str, with_intent: bool, witness: str = "value") -> list[tuple[list, list]]:
    """The script's KEYS and ARGV for every guest, TAKE_BATCH a call; a record's witness is the
    value read or ("digest") its SHA-1, as the second look sends past its values' allowance."""
    batches = []
    for start in range(0, len(raws), scripts.TAKE_BATCH):
        if kind == "guest":
            keys, args = [INTENTS, DUE, ONLINE, EVENTS], [1.8e9, 86400, "string", PREFIX, 100_000]
        else:
            keys, args = [ONLINE, INTENTS, DUE, EVENTS], [1.8e9, 100_000]
        for i in range(start, min(start + scripts.TAKE_BATCH, len(raws))):
            intent_id, intent = (f"guest:guest_{i}", '{"steps":["auth","mongo"]}') if with_intent else ("", "")
            if kind == "guest":
                _add_guest(keys, args, f"s{i}", f"guest_{i}", raws[i], witness, intent_id, intent)
            else:
                keys.append(f"guest_connection:s{i}")
                args += [f"guest_{i}", raws[i], intent_id, intent, len(keys), DECISION]
        batches.append((keys, args))
    return batches


def usec_a_guest(text: str, kind: str, n: int, with_intent: bool, aof: bool, witness: str = "value") -> float:
    server = RedisProcess(["--appendonly", "yes", "--appendfsync", "no"] if aof else ())
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        batches = calls(fill(client, n, kind), kind, with_intent, witness)
        script = client.register_script(text)
        client.config_resetstat()
        answers = windowed.call_all(script, batches)
        if any(one != 1 for answer in answers for one in answer):
            raise SystemExit("a guest was not taken: the script or the data is not what this expects")
        return evalsha_usec(client) / n
    finally:
        server.stop()


def interleaved(texts: list[str], n: int, witness: str = "value") -> list[list[float]]:
    """TAKE_GUEST versions ``texts`` taking the stale guests of the sweep benchmark's dataset of
    ``n`` guests, batch by batch in turn (A B B A ...): per version, Redis µs a guest of each call."""
    with RedisProcess() as server:
        client = server.client(socket_timeout=120)
        sweep_data.fill(server, client, n, 0.1, n // 100)
        stale = sweep_data.stale_indices(n, 0.1)
        sockets = [sweep_data.socket_id(i) for i in stale]
        raws = [value for start in range(0, len(sockets), 1000)
                for value in client.mget([sweep_data.CONN + s for s in sockets[start:start + 1000]])]
        users = [sweep_data.user_id(i) for i in stale]
        takes = [client.register_script(text) for text in texts]
        costs: list[list[float]] = [[] for _ in texts]
        for call, start in enumerate(range(0, len(stale), scripts.TAKE_BATCH)):
            turn, at = divmod(call, len(texts))
            which = at if turn % 2 == 0 else len(texts) - 1 - at
            batch = slice(start, start + scripts.TAKE_BATCH)
            keys, args = _guest_batch(sockets[batch], users[batch], raws[batch], witness)
            before = evalsha_usec(client)
            if any(one != 1 for one in takes[which](keys=keys, args=args)):
                raise SystemExit("a guest was not taken: the script or the data is not what this expects")
            costs[which].append((evalsha_usec(client) - before) / len(raws[batch]))
        return costs


def _guest_batch(sockets: list[str], users: list[str], raws: list[bytes], witness: str) -> tuple[list, list]:
    """TAKE_GUEST's KEYS and ARGV for these guests, as the sweep sends them with the services off."""
    keys, args = [INTENTS, DUE, ONLINE, EVENTS], [1.8e9, 86400, "string", PREFIX, 100_000]
    for socket, user, raw in zip(sockets, users, raws):
        _add_guest(keys, args, socket, user, raw, witness)
    return keys, args


def _add_guest(keys: list, args: list, socket: str, user: str, raw: bytes, witness: str,
               intent_id: str = "", intent: str = "") -> None:
    """One guest's KEYS and ARGV of TAKE_GUEST: its record compared with the value read or its SHA-1."""
    keys += [f"guest_connection:{socket}", f"reaper:quarantine:guest_connection:{socket}"]
    read = (raw, b"") if witness == "value" else (b"", hashlib.sha1(raw).hexdigest())
    args += ["delete", "string", *read, intent_id, intent, user, socket, DECISION]


def evalsha_usec(client: redis.Redis) -> int:
    """Redis's own time in EVALSHA since its stats were last reset, in µs: the scripts with
    every command they call (0 before the first)."""
    return client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("guest", "orphan"), default="guest",
                        help="TAKE_GUEST (stale guests) or TAKE_ORPHAN (orphan entries)")
    parser.add_argument("--script", help="a file holding another version of it (default: this checkout's)")
    parser.add_argument("--guests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--witness", choices=("value", "digest"), default="value",
                        help="TAKE_GUEST: each record compared with the value read, or with its SHA-1")
    parser.add_argument("--against", metavar="OLD.lua",
                        help="TAKE_GUEST: this checkout's and this version, interleaved on one fill of --guests")
    args = parser.parse_args(argv)
    if args.against:
        return compare(Path(args.against), args.guests, args.witness)
    name = {"guest": "TAKE_GUEST", "orphan": "TAKE_ORPHAN"}[args.kind]
    text = Path(args.script).read_text() if args.script else getattr(scripts, name)
    witness = f", records compared by {args.witness}" if args.kind == "guest" else ""
    print(f"{name}, {args.guests:,} guests in batches of {scripts.TAKE_BATCH}{witness}: Redis µs a guest "
          f"(best three of {args.rounds})")
    for with_intent in (False, True):
        for aof in (False, True):
            best = sorted(usec_a_guest(text, args.kind, args.guests, with_intent, aof, args.witness)
                          for _ in range(args.rounds))[:3]
            print(f"  intent {'yes' if with_intent else 'no ':3}  aof {'yes' if aof else 'no ':3}  "
                  + "  ".join(f"{one:5.2f}" for one in best), flush=True)
    return 0


def compare(other: Path, guests: int, witness: str) -> int:
    versions = [("this checkout", scripts.TAKE_GUEST), (other.name, other.read_text())]
    costs = interleaved([text for _, text in versions], guests, witness)
    print(f"TAKE_GUEST, the {guests // 10:,} stale of {guests:,} guests, records compared by {witness}, "
          f"in turn a call of {scripts.TAKE_BATCH}: Redis µs a guest")
    for (name, _), each in zip(versions, costs):
        print(f"  {name:24} mean {statistics.mean(each):6.2f}  median {statistics.median(each):6.2f}  "
              f"({len(each)} calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
