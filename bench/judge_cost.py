"""What Python spends on a record and on a users:online entry: reaper's judging against the
floor's, no Redis (the sweep benchmark's floor row, bench/sweep_workloads.py, without its reads).

    python bench/judge_cost.py                          # 200,000 guests, 6 rounds
    python bench/judge_cost.py --guests 1000000 --rounds 4

The records and entries are the sweep benchmark's (bench/sweep_data.py: seed-shaped, 10 % stale,
a million guests sharing ~25,000 heartbeat texts), in pages of 1000 as SCAN and HSCAN give them.
Per record, the floor parses (msgspec: the parser its row measures fastest on this data, and a
dependency of reaper's) and judges, and remembers each key in a set; reaper does what its record pass's main thread does with a page
(reaper/sweep/record_pass.py): the quick lane of a judge made for the run (a sweep's first pass
starts with one), the careful way for what it hands on, the live users and the key names into
their salted filters, the fresh ages into the skew, the stale records held for the second look
as the default first pass holds them (its budget full from the start: the quick lane's rows). Per entry, the floor parses it and looks its
record key up in its set; reaper sorts the page (records.online_sockets) and asks its filter
(orphan_pass.not_seen). The two alternate round by round; medians in µs, and each side's
verdicts are checked to agree (live, stale, entries to look up), or nothing is printed.
"""

import statistics
import sys
import time
from pathlib import Path

import hiredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import sweep_data  # noqa: E402
import sweep_workloads as workloads  # noqa: E402
from reaper.core.live_users import LiveUsers  # noqa: E402
from reaper.core.records import online_sockets  # noqa: E402
from reaper.core.salted_filter import SaltedFilter  # noqa: E402
from reaper.core.skew import Skew  # noqa: E402
from reaper.core.staleness import Policy  # noqa: E402
from reaper.sweep.budget import Budget  # noqa: E402
from reaper.sweep.judging import PageJudge  # noqa: E402
from reaper.sweep.orphan_pass import not_seen  # noqa: E402

PAGE = 1000
CONN, GUEST_PREFIX = sweep_data.CONN, "guest_"


def dataset(guests: int, now: float) -> tuple[list, list]:
    """Pages of (key names, values) and pages of (field, value), as Redis would answer them."""
    records, entries = [], []
    reader = hiredis.Reader()
    for key, command in sweep_data.each_command(guests, 0.1, max(10, guests // 100), now):
        reader.feed(command)
        while (parsed := reader.gets()) is not False:
            if parsed[0] == b"SET":
                records.append((parsed[1], parsed[2]))
            else:  # HSET users:online field value ...
                entries += zip(parsed[2::2], parsed[3::2])
    pages = [([k for k, _ in records[i:i + PAGE]], [v for _, v in records[i:i + PAGE]])
             for i in range(0, len(records), PAGE)]
    return pages, [entries[i:i + PAGE] for i in range(0, len(entries), PAGE)]


class Floor:
    def __init__(self, now: float):
        self.judge = workloads.FloorJudge(workloads.MsgspecParser(), workloads.Judging(), now)

    def records(self, pages) -> tuple[int, int]:
        for names, values in pages:
            self.judge.records(names, values)
        return self.judge.counts.live, self.judge.counts.stale

    def entries(self, pages) -> int:
        return sum(len(self.judge.entries([f for f, _ in page], [v for _, v in page])) for page in pages)


class Reaper:
    def __init__(self, now: float, guests: int):
        judging = workloads.Judging()
        policy = Policy(judging.connection_timeout_s, judging.ping_interval_s, judging.max_missed_pings,
                        judging.clock_skew_s, judging.max_future_s)
        self.judge = PageJudge(now, policy, "string", CONN)
        self.live, self.seen, self.skew = LiveUsers(guests, 0.0), SaltedFilter(guests), Skew()
        self.budget = Budget(0)

    def records(self, pages) -> tuple[int, int]:
        live = stale = 0
        for names, values in pages:
            self.seen.add_all(names)
            judged, others = self.judge.quick(names, values, stale_as_rows=self.budget.full)
            if others:  # none in this data: what the careful way reads comes from Redis
                raise SystemExit(f"{len(others)} records the quick lane handed on: not the benchmark's data")
            self.live.add_all(judged.live)
            self.skew.add_all(judged.fresh_ages)
            self.budget.hold_rows(judged.stale_rows)
            live, stale = live + len(judged.live), stale + len(judged.stale_rows)
        return live, stale

    def entries(self, pages) -> int:
        return sum(len(not_seen(online_sockets(page, GUEST_PREFIX, CONN).named, self.seen)) for page in pages)


def measure(guests: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """{side: [(µs a record, µs an entry) a round]}; each round a fresh judge on each side."""
    now = time.time()
    records, entries = dataset(guests, now)
    count_records, count_entries = sum(len(n) for n, _ in records), sum(map(len, entries))
    sides = {"floor": lambda: Floor(now), "reaper": lambda: Reaper(now, guests)}
    costs, verdicts = {name: [] for name in sides}, {}
    for round_ in range(rounds):
        for name in (sorted(sides) if round_ % 2 else sorted(sides, reverse=True)):
            side = sides[name]()
            started = time.perf_counter()
            judged = side.records(records)
            middle = time.perf_counter()
            looked_up = side.entries(entries)
            ended = time.perf_counter()
            costs[name].append(((middle - started) / count_records * 1e6, (ended - middle) / count_entries * 1e6))
            verdicts[name] = (judged, looked_up)
    if verdicts["floor"] != verdicts["reaper"]:
        raise SystemExit(f"the two sides disagree: {verdicts}")
    return costs


def main(argv=None) -> int:
    args = sweep_data.guests_and_rounds(argv, __doc__, 200_000, 6)
    costs = measure(args.guests, args.rounds)
    print(f"{args.guests:,} guests, {args.rounds} rounds alternated; median µs (min-max)")
    print(f"{'side':8s} {'a record':>22s} {'an entry':>22s}")
    for name, rows in costs.items():
        cells = []
        for column in (0, 1):
            values = [row[column] for row in rows]
            cells.append(f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        print(f"{name:8s} {cells[0]:>22s} {cells[1]:>22s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
