"""What the clock-skew hook costs the sweep (issue #5): 1M fresh records judged by the sweep's
judging part, with their heartbeat ages fed to the report's skew (reporting.Counts) and without,
in process, no Redis involved.

    python bench/skew_hook.py [--records 1000000] [--rounds 7]

Prints the best and median time of each and the difference per record.
"""

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reaper.core.config import load_config  # noqa: E402
from reaper.core.records import GuestRecord  # noqa: E402
from reaper.core.staleness import Policy  # noqa: E402
from reaper.sweep.judging import judge_page  # noqa: E402
from reaper.sweep.report import SweepReport  # noqa: E402
from reaper.sweep.reporting import Counts  # noqa: E402

NOW = 1_800_000_000.0


def without_hook(records, policy) -> None:
    judge_page(records, NOW, policy, "string")


def with_hook(records, policy) -> None:
    Counts(SweepReport(now=NOW), "guest_").on_judged(judge_page(records, NOW, policy, "string"))


def fresh_records(count: int) -> list[GuestRecord]:
    rng = random.Random(1)
    ages = (rng.uniform(-0.5, 30.0) for _ in range(count))
    return [GuestRecord(f"guest_connection:s{i}", f"s{i}", f"guest_{i}", NOW - age, NOW - age)
            for i, age in enumerate(ages)]


def judge_all(judge, records, policy) -> float:
    started = time.perf_counter()
    judge(records, policy)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    config = load_config(None, {"REAPER_REDIS_URL": "redis://127.0.0.1:1/0"}, {})
    policy, records = Policy.from_config(config.timing), fresh_records(args.records)
    times = {"without": [], "with": []}
    for _ in range(args.rounds):
        for name, judge in (("without", without_hook), ("with", with_hook)):
            times[name].append(judge_all(judge, records, policy))
    for name, runs in times.items():
        runs.sort()
        print(f"{name:8s} best {runs[0]:.3f} s  median {runs[len(runs) // 2]:.3f} s  "
              f"({runs[0] / args.records * 1e9:.0f} ns per record)")
    best = (times["with"][0] - times["without"][0]) / args.records * 1e9
    median = (times["with"][len(times["with"]) // 2] - times["without"][len(times["without"]) // 2])
    print(f"hook: +{best:.0f} ns per fresh record (best), +{median / args.records * 1e9:.0f} ns "
          f"(median): +{median * 1e6 / args.records:.2f} s per million fresh records")


if __name__ == "__main__":
    main()
