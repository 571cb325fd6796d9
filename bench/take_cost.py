"""What Redis spends on a guest of TAKE_GUEST (reaper/store/scripts.py), the script that takes a
stale guest's record, its users:online entry, its intent and its decision record in one step, or
of TAKE_ORPHAN (an orphan entry, its intent and decision record).

    python bench/take_cost.py                                  # TAKE_GUEST of this checkout
    python bench/take_cost.py --kind orphan                    # TAKE_ORPHAN
    python bench/take_cost.py --script OLD.lua [--kind ...]    # another version, to compare
    python bench/take_cost.py --witness digest                 # records compared by SHA-1 (held ones past 32 MB)

N guests are taken in batches of scripts.TAKE_BATCH, two calls in Redis at a time (as the sweep
takes them), from a private redis-server (never 6379); Redis's own time is read from INFO
commandstats (EVALSHA's usec: the scripts with every command they call). Four settings: with and
without an intent a guest (the services on or off), with and without an append-only file (what
a Redis with replicas or an AOF does for each write a script makes). Each is measured --rounds
times on a fresh fill; the best three are printed, in µs a guest.
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

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
                keys += [f"guest_connection:s{i}", f"reaper:quarantine:s{i}"]
                read = (raws[i], b"") if witness == "value" else (b"", hashlib.sha1(raws[i]).hexdigest())
                args += ["delete", "string", *read, intent_id, intent, f"guest_{i}", f"s{i}", DECISION]
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
        return client.info("commandstats")["cmdstat_evalsha"]["usec"] / n
    finally:
        server.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("guest", "orphan"), default="guest",
                        help="TAKE_GUEST (stale guests) or TAKE_ORPHAN (orphan entries)")
    parser.add_argument("--script", help="a file holding another version of it (default: this checkout's)")
    parser.add_argument("--guests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--witness", choices=("value", "digest"), default="value",
                        help="TAKE_GUEST: each record compared with the value read, or with its SHA-1")
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
