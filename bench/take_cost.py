"""What Redis spends on a guest of TAKE_GUEST (reaper/store/scripts.py), the script that takes a
stale guest's record, its users:online entry, its intent and its decision record in one step.

    python bench/take_cost.py                       # the script of this checkout
    python bench/take_cost.py --script OLD.lua      # another version of it, to compare

N guests are taken in batches of scripts.TAKE_BATCH, two calls in Redis at a time (as the sweep
takes them), from a private redis-server (never 6379); Redis's own time is read from INFO
commandstats (EVALSHA's usec: the scripts with every command they call). Four settings: with and
without an intent a guest (the services on or off), with and without an append-only file (what
a Redis with replicas or an AOF does for each write a script makes). Each is measured --rounds
times on a fresh fill; the best three are printed, in µs a guest.
"""

import argparse
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


def fill(client: redis.Redis, n: int) -> list[bytes]:
    """N guests as the signaling service writes them, each with its users:online entry."""
    pipe, raws = client.pipeline(transaction=False), []
    for i in range(n):
        raw = json.dumps(record(f"s{i}", f"guest_{i}", 1.8e9)).encode()
        raws.append(raw)
        pipe.set(f"guest_connection:s{i}", raw)
        pipe.hset("users:online", f"guest_{i}",
                  json.dumps({"userId": f"guest_{i}", "socketId": f"s{i}", "isGuest": True}))
    pipe.execute()
    return raws


def calls(raws: list[bytes], with_intent: bool) -> list[tuple[list, list]]:
    """TAKE_GUEST's KEYS and ARGV for every guest, TAKE_BATCH a call."""
    batches = []
    for start in range(0, len(raws), scripts.TAKE_BATCH):
        keys = ["reaper:cascade:intents", "reaper:cascade:due", "users:online", "reaper:events"]
        args = [1.8e9, 86400, "string", PREFIX, 100_000]
        for i in range(start, min(start + scripts.TAKE_BATCH, len(raws))):
            intent_id, intent = (f"guest:guest_{i}", '{"steps":["auth","mongo"]}') if with_intent else ("", "")
            keys += [f"guest_connection:s{i}", f"reaper:quarantine:s{i}"]
            args += ["delete", "string", raws[i], b"", intent_id, intent, f"guest_{i}", f"s{i}", DECISION]
        batches.append((keys, args))
    return batches


def usec_a_guest(text: str, n: int, with_intent: bool, aof: bool) -> float:
    server = RedisProcess(["--appendonly", "yes", "--appendfsync", "no"] if aof else ())
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        batches = calls(fill(client, n), with_intent)
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
    parser.add_argument("--script", help="a file holding another TAKE_GUEST (default: this checkout's)")
    parser.add_argument("--guests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    text = Path(args.script).read_text() if args.script else scripts.TAKE_GUEST
    print(f"TAKE_GUEST, {args.guests:,} guests in batches of {scripts.TAKE_BATCH}: Redis µs a guest "
          f"(best three of {args.rounds})")
    for with_intent in (False, True):
        for aof in (False, True):
            best = sorted(usec_a_guest(text, args.guests, with_intent, aof) for _ in range(args.rounds))[:3]
            print(f"  intent {'yes' if with_intent else 'no ':3}  aof {'yes' if aof else 'no ':3}  "
                  + "  ".join(f"{one:5.2f}" for one in best), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
