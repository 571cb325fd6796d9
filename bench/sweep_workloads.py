"""The comparison programs of bench/sweep.py, each run as its own process so that its wall time and
peak RSS are measured exactly like `reaper run --once`'s. Each prints one JSON line of figures.

    python bench/sweep_workloads.py floor URL
    python bench/sweep_workloads.py naive URL
    python bench/sweep_workloads.py httpx BASE_URL COUNT CONCURRENCY
"""

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

CONN_PATTERN = "guest_connection:*"
ONLINE = "users:online"
SCAN_COUNT = 1000


def floor(url: str) -> dict:
    """The least any Python sweep does: every record and every online entry read and parsed once."""
    import redis
    client = redis.Redis.from_url(url)
    started = time.perf_counter()
    records = entries = 0
    for cursor_batch in _scan(client):
        for value in client.mget(cursor_batch):
            if value is not None:
                json.loads(value)
                records += 1
    cursor = 0
    while True:
        cursor, fields = client.hscan(ONLINE, cursor, count=SCAN_COUNT)
        for value in fields.values():
            json.loads(value)
            entries += 1
        if cursor == 0:
            break
    return {"work_s": time.perf_counter() - started, "records": records, "entries": entries}


def _scan(client):
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, match=CONN_PATTERN, count=SCAN_COUNT)
        if keys:
            yield keys
        if cursor == 0:
            return


def naive(url: str, connection_timeout_s: float) -> dict:
    """What the in-process manager did: KEYS, then one GET per guest, one DEL and one HDEL per
    stale guest, each a round trip of its own."""
    import redis
    client = redis.Redis.from_url(url)
    started = time.perf_counter()
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
    return {"work_s": time.perf_counter() - started, "reaped": reaped}


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
        result = floor(args[0])
    elif mode == "naive":
        result = naive(args[0], float(args[1]))
    elif mode == "httpx":
        result = plain_httpx(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
