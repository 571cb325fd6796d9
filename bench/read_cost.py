"""What reading the guest records costs Redis: reaper's reader (reaper/store/scan_ahead.py, the
default first pass's) against the floor's (bench/sweep_workloads.py), each reading every record
of one fill of the sweep benchmark's dataset, in turn (A B B A ...).

    python bench/read_cost.py --guests 1000000 --rounds 3

Both read the same pages the same way (SCAN COUNT 1000, then MGET of each page, the next request
in Redis before a page is handed out); what may differ is the order Redis runs them in. Redis's
own CPU (INFO cpu) and its time in SCAN and MGET (INFO commandstats) are printed per run and as
medians; each side checks it read every record. Nothing is judged: this is Redis's side alone.
"""

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import sweep_data as data  # noqa: E402
import sweep_workloads as workloads  # noqa: E402
from sweep import redis_cpu_s  # noqa: E402
from support.redis_proc import RedisProcess  # noqa: E402

from reaper.store.scan_ahead import ScanAhead  # noqa: E402

COLUMNS = ("wall", "redis_cpu", "scan", "mget")


def floor_pages(client):
    return workloads._PipelinedPages(client).records()


def reaper_pages(client):
    return ScanAhead(client, data.CONN + "*", workloads.SCAN_COUNT, lambda names: None).pages()


READERS = {"floor": floor_pages, "reaper": reaper_pages}


def read_all(client, reader, guests: int) -> dict[str, float]:
    """Every record read once by ``reader``; Redis's figures for it, in seconds."""
    client.config_resetstat()
    redis_before, started = redis_cpu_s(client), time.perf_counter()
    read = sum(len(values) for _, values in reader(client))
    wall = time.perf_counter() - started
    if read < guests:  # SCAN may give a key twice, never none
        raise SystemExit(f"{reader.__name__} read {read} records of {guests}: not a run to compare")
    stats = client.info("commandstats")
    return {"wall": wall, "redis_cpu": redis_cpu_s(client) - redis_before,
            "scan": stats.get("cmdstat_scan", {}).get("usec", 0) / 1e6,
            "mget": stats.get("cmdstat_mget", {}).get("usec", 0) / 1e6}


def main(argv=None) -> int:
    args = data.guests_and_rounds(argv, __doc__, 100_000, 3)
    runs: dict[str, list[dict]] = {name: [] for name in READERS}
    with RedisProcess() as server:
        client = server.client(socket_timeout=120)
        data.fill(server, client, args.guests, 0.1, max(10, args.guests // 100))
        for round_ in range(args.rounds):
            for name in READERS if round_ % 2 == 0 else reversed(READERS):
                runs[name].append(read_all(client, READERS[name], args.guests))
                print(f"round {round_ + 1} {name:7} " + "  ".join(f"{c} {runs[name][-1][c]:6.3f}" for c in COLUMNS),
                      flush=True)
    print(f"\nmedians, s ({args.guests:,} records, {args.rounds} rounds; scan and mget: Redis's time in each):")
    for name, each in runs.items():
        print(f"{name:7} " + "  ".join(f"{c} {statistics.median(r[c] for r in each):6.3f}" for c in COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
