"""How fast is a sweep, and what does it cost Redis? (issue #4.) Everything runs against a private
redis-server this script starts (never 6379) and stops.

    python bench/sweep.py --guests 1000000 --stale 0.1     # floor / naive / reaper table
    python bench/sweep.py --mode cascade --cascade-guests 20000

Sweep mode fills N guests (bench/sweep_data.py), then measures, each as its own process while a
second client PINGs Redis every millisecond:
    floor         the whole job, reading only: SCAN+MGET, parse and judge every record; HSCAN
                  users:online, parse every entry, EXISTS (pipelined per page) only for entries
                  naming a socket the record pass did not see; with the fastest parser installed
                  (msgspec or orjson, measured on the data first), each page's request sent
                  before the page before it is parsed (Redis and Python at work together)
    floor_serial  the same, one request at a time (a plain redis-py loop), for reference
    floor_stdlib  the floor with the standard library's json
    naive         KEYS, then GET per guest, DEL+HDEL per stale guest (the old in-process manager)
    reaper        `python -m reaper run --once`, downstream services off, on a freshly refilled dataset
Every row: wall, peak RSS, process CPU (user+sys), Redis's own CPU (INFO cpu), the part of it
spent in scripts (INFO commandstats) and PING latency. The PING client's thread runs in the
real-time class where it may (root), so that its latency is Redis's wait, not its own wait for a
core of this busy host (--ping-sched other: an ordinary thread).
Cascade mode fills K stale guests and compares the auth-service DELETEs/s of `reaper run --once
--force` with a plain pooled httpx loop of the same concurrency, both against bench/fast_standin.py.
See bench/README.md for what each figure means.
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(BENCH))

import sweep_data as data  # noqa: E402
import sweep_workloads as workloads  # noqa: E402
from support.redis_proc import RedisProcess  # noqa: E402

PING_PACE_S = 0.001
# The PING client's thread, SCHED_FIFO at the lowest real-time priority: above the sweep, Redis
# and this harness, so that on 2 cores with 3 busy processes its PING leaves when it is due and
# its answer is read when it comes; it sleeps between PINGs, so it starves nothing.
PING_RT_PRIORITY = 1
ping_sched = "fifo"  # --ping-sched: "fifo" (real-time where permitted) or "other" (ordinary)
SCRIPT_COMMANDS = ("cmdstat_eval", "cmdstat_evalsha", "cmdstat_eval_ro", "cmdstat_evalsha_ro",
                   "cmdstat_fcall", "cmdstat_fcall_ro")
PEAK_POLL_S = 0.005
SLOW_US = 1000  # commands slower than 1 ms are counted per run
WORKLOADS = str(BENCH / "sweep_workloads.py")
SWEEP_LINE = re.compile(r"Sweep: scanned=(\d+) .*duration=([\d.]+)s")
# Issue #14: reaper's wall, process CPU and Redis CPU each within 1.3x the floor's; >= 30x the naive way.
TARGETS = {"reaper/floor": 1.3, "naive/reaper": 30.0, "rss_mb": 150.0, "ping_p99_ms": 5.0,
           "cascade_share": 0.8}


# -- measuring ---------------------------------------------------------------------------------

class Pinger:
    """A second client sending PING in a loop (paced at ~1 ms) while a sweep runs, from a thread
    in the real-time class where it may be (``ping_sched``; ``scheduling`` says what it got)."""

    def __init__(self, redis_proc: RedisProcess):
        self.client = redis_proc.client(socket_timeout=60)
        self.samples: list[float] = []
        self.scheduling = "ordinary thread (--ping-sched other)"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Pinger":
        self.client.ping()  # connect before the clock starts
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()

    def _loop(self) -> None:
        if ping_sched == "fifo":
            self.scheduling = _real_time_thread()
        while not self._stop.is_set():
            started = time.perf_counter()
            self.client.ping()
            self.samples.append(time.perf_counter() - started)
            self._stop.wait(PING_PACE_S)  # pacing, not synchronisation

    def stats(self) -> dict:
        ordered = sorted(self.samples) or [0.0]
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
        return {"pings": len(self.samples), "p50_ms": pick(0.50), "p99_ms": pick(0.99),
                "max_ms": ordered[-1] * 1000, "sched": self.scheduling}


def _real_time_thread() -> str:
    """Put the calling thread in SCHED_FIFO; what it got, in words."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(PING_RT_PRIORITY))  # 0: this thread
    except (AttributeError, OSError) as exc:  # not Linux; not root (EPERM)
        return f"ordinary thread (real-time refused: {exc})"
    return f"real-time thread (SCHED_FIFO {PING_RT_PRIORITY})"


@dataclass
class ChildRun:
    wall_s: float
    rss_mb: float  # the child's own peak RSS (VmHWM of its image, polled every few ms)
    returncode: int
    output: str
    cpu_s: float = 0.0  # the child's user+sys CPU, from its rusage when it was reaped


def run_child(cmd: list[str], env: dict | None = None, cwd: str | None = None,
              timeout_s: float = 3600) -> ChildRun:
    """Run one process to its end; wall time from spawn to exit, peak RSS of that very process."""
    with tempfile.TemporaryFile("w+") as out:
        cpu_before = _children_cpu_s()  # this process reaps no other child meanwhile
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        try:
            peak_kb = _wait_watching_peak(proc, timeout_s)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - started
        cpu = _children_cpu_s() - cpu_before
        out.seek(0)
        return ChildRun(wall, peak_kb / 1024, proc.returncode, out.read(), cpu)


def _children_cpu_s() -> float:
    """User+sys CPU of the reaped children (and the grandchildren they waited for): the delta
    around one child's run is that child's rusage (ru_utime + ru_stime of its wait4)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def scripts_s(client) -> float:
    """Redis's time in scripts so far (INFO commandstats, EVAL/EVALSHA/FCALL and their read-only
    forms: each with the commands it calls), in seconds."""
    stats = client.info("commandstats")
    return sum(stats.get(name, {}).get("usec", 0) for name in SCRIPT_COMMANDS) / 1e6


def redis_cpu_s(client) -> float:
    """Redis's own CPU so far (INFO cpu: used_cpu_sys + used_cpu_user, all its threads)."""
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _wait_watching_peak(proc: subprocess.Popen, timeout_s: float) -> int:
    """Wait for the child, reading its VmHWM meanwhile; the last reading before exit is its peak.

    Not getrusage/wait4's ru_maxrss: the kernel folds the pre-exec image (a fork of this process,
    tens or hundreds of MB) into it, so a 10 MB child would read as this process's size.
    """
    deadline = time.monotonic() + timeout_s
    status_path, peak_kb = f"/proc/{proc.pid}/status", 0
    while True:
        peak_kb = max(peak_kb, _vm_hwm_kb(status_path))
        try:
            proc.wait(PEAK_POLL_S)  # also the polling interval of the peak
            return peak_kb
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.args} still running after {timeout_s}s") from None


def _vm_hwm_kb(status_path: str) -> int:
    try:
        with open(status_path) as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:  # gone already
        pass
    return 0  # a zombie has no memory lines


def measured(redis_proc: RedisProcess, cmd: list[str], **kw) -> tuple[ChildRun, dict]:
    """Run ``cmd`` while PINGing; the PING figures, Redis's own slow log, Redis's CPU seconds
    during the run (the PINGs' share is in every row alike: see the idle row's) and its seconds
    in scripts."""
    with SlowLog(redis_proc) as slow, Pinger(redis_proc) as pinger:
        redis_before, scripts_before = redis_cpu_s(slow.client), scripts_s(slow.client)
        run = run_child(cmd, **kw)
        redis_cpu = redis_cpu_s(slow.client) - redis_before
        in_scripts = scripts_s(slow.client) - scripts_before
    if run.returncode not in (0, 1):
        raise RuntimeError(f"{cmd} exited {run.returncode}:\n{run.output[-3000:]}")
    return run, {**pinger.stats(), **slow.stats(), "redis_cpu_s": redis_cpu, "scripts_s": in_scripts}


class SlowLog:
    """Commands that held Redis for more than SLOW_US during a run: a PING spike with none of
    these was the machine's scheduler (2 cores, 3 busy processes), not a blocking command."""

    def __init__(self, redis_proc: RedisProcess):
        self.client = redis_proc.client(socket_timeout=60)
        self.entries: list = []

    def __enter__(self) -> "SlowLog":
        # Not logging while the log is reset: freeing the thousands of entries of the row before
        # takes Redis 15-20 ms, and would show as this row's slowest command.
        self.client.config_set("slowlog-log-slower-than", -1)
        self.client.slowlog_reset()
        self.client.config_set("slowlog-max-len", 100_000)
        self.client.config_set("slowlog-log-slower-than", SLOW_US)
        return self

    def __exit__(self, *exc) -> None:
        self.entries = self.client.slowlog_get(100_000)
        self.client.config_set("slowlog-log-slower-than", 10_000)
        self.client.close()

    def stats(self) -> dict:
        worst = max(self.entries, key=lambda e: e["duration"], default=None)
        return {"slow_count": len(self.entries),
                "slowest_ms": worst["duration"] / 1000 if worst else 0.0,
                "slowest_cmd": _command_name(worst["command"]) if worst else "-"}


def _command_name(command) -> str:
    text = command.decode(errors="replace") if isinstance(command, bytes) else str(command)
    return text.split(" ")[0].upper()


def last_json(output: str) -> dict:
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


# -- sweep mode --------------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    wall_s: float | None = None
    work_s: float | None = None
    rss_mb: float | None = None
    ping: dict = field(default_factory=dict)
    reaped: str = "-"
    note: str = ""
    round: int = 1  # --repeat: which round
    cpu_s: float | None = None  # the process's user+sys CPU, spawn to exit
    redis_cpu_s: float | None = None  # Redis's CPU during the row
    scripts_s: float | None = None  # Redis's time in scripts during the row (INFO commandstats)
    work_cpu_s: float | None = None  # floor rows: process CPU of the measured loop alone


def child_row(name: str, run: ChildRun, ping: dict, work_s: float | None = None, **kw) -> Row:
    return Row(name, run.wall_s, work_s, run.rss_mb, ping, cpu_s=run.cpu_s,
               redis_cpu_s=ping.get("redis_cpu_s"), scripts_s=ping.get("scripts_s"), **kw)

def reaper_env(redis_url: str, auth_url: str = "", concurrency: int | None = None,
               reaper_path: str | None = None, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REAPER_")}
    if reaper_path:  # another copy of the package (e.g. `git archive HEAD reaper | tar -x -C DIR`)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (reaper_path, env.get("PYTHONPATH")) if p)
    env.update({
        "REAPER_REDIS_URL": redis_url, "REAPER_AUTH_SERVICE_BASE_URL": auth_url,
        "REAPER_USER_SERVICE_BASE_URL": "", "REAPER_MONGO_URI": "", "REAPER_LOG_LEVEL": "INFO",
        "REAPER_TIMING_CONNECTION_TIMEOUT": data.CONNECTION_TIMEOUT,
        "REAPER_TIMING_PING_INTERVAL": data.PING_INTERVAL,
    })
    if concurrency is not None:
        env["REAPER_CASCADE_CONCURRENCY"] = str(concurrency)
    env.update(extra or {})
    return env


def compile_reaper(reaper_path: str | None) -> Path:
    """Byte-compile the reaper the rows run, as installing it does (pip compiles what it installs,
    the image too): under PYTHONDONTWRITEBYTECODE, which some machines set, every run would compile
    each of reaper's modules from source again (~0.1 s), while the floor's imports (redis, msgspec)
    come from bytecode. Returns the package's directory."""
    where = subprocess.run([sys.executable, "-c", "import os, reaper; print(os.path.dirname(reaper.__file__))"],
                           env=reaper_env("", reaper_path=reaper_path), cwd=tempfile.gettempdir(),
                           capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", where], check=True)
    return Path(where)


def py_spy() -> str:
    """py-spy beside this interpreter (a venv's bin/, not on PATH unless activated), else PATH's."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else "py-spy"


def reaper_cmd(profile: str | None, profile_out: str | None, *flags: str) -> list[str]:
    base = [sys.executable, "-m", "reaper", "run", "--once", *flags]
    if profile == "py-spy":  # waiting counts too: where the wall time goes
        return [py_spy(), "record", "--idle", "--format", "raw", "--rate", "200", "-o", profile_out,
                "--", *base]
    if profile == "py-spy-cpu":  # on-CPU samples only, per thread: where the process CPU goes
        return [py_spy(), "record", "--threads", "--format", "raw", "--rate", "200", "-o", profile_out,
                "--", *base]
    if profile == "cprofile":
        return [sys.executable, "-m", "cProfile", "-o", profile_out, *base[1:]]
    return base


def fill(redis_proc, client, args) -> data.Dataset:
    started = time.perf_counter()
    dataset = data.fill(redis_proc, client, args.guests, args.stale, args.registered)
    memory = client.info("memory")["used_memory"] / 2**20
    print(f"  filled {dataset.guests:,} guests ({dataset.stale:,} stale, {dataset.registered:,} "
          f"registered; record {dataset.record_bytes} B) in {time.perf_counter() - started:.1f}s; "
          f"Redis uses {memory:.0f} MB", flush=True)
    return dataset


def reaped_text(left: data.Leftovers, dataset: data.Dataset) -> str:
    gone = dataset.stale - left.stale_records
    verdict = "all" if left.all_reaped(dataset) else "NOT ALL"
    extra = "" if left.all_reaped(dataset) else (
        f" (records left {left.stale_records}, entries left {left.stale_entries}, live records "
        f"{left.live_records}/{dataset.guests - dataset.stale}, online {left.online})")
    return f"{gone:,}/{dataset.stale:,} {verdict}{extra}"


ROW_ORDER = ("floor", "floor_serial", "floor_stdlib", "naive", "reaper")


def sweep_mode(redis_proc: RedisProcess, client, args) -> list[Row]:
    """Every selected row in every round (``--repeat``), each round on a fresh fill; naive
    deletes the stale guests, so the data is filled again after it."""
    rows = []
    dataset = fill(redis_proc, client, args)
    if {"floor", "floor_serial", "floor_stdlib"} & args.rows:
        args.floor_parser = args.floor_parser or choose_parser(client)
    with SlowLog(redis_proc) as slow, Pinger(redis_proc) as idle:
        redis_before = redis_cpu_s(slow.client)
        time.sleep(args.idle_s)  # the baseline: PING with nothing else running
        redis_idle = redis_cpu_s(slow.client) - redis_before
    rows.append(Row("idle", ping={**idle.stats(), **slow.stats()}, redis_cpu_s=redis_idle,
                    note=f"PING alone for {args.idle_s:g}s, no sweep"))
    for round_ in range(1, args.repeat + 1):  # the machine's speed drifts: every row again
        if round_ > 1:
            print(f"  round {round_} of {args.repeat}", flush=True)
            dataset = fill(redis_proc, client, args)
        for name in ROW_ORDER:
            if name not in args.rows:
                continue
            if name == "floor":
                rows.append(floor_row(redis_proc, dataset, args.floor_parser, "floor", round_))
            elif name == "floor_serial":
                rows.append(floor_row(redis_proc, dataset, args.floor_parser, "floor_serial", round_,
                                      reader="serial"))
            elif name == "floor_stdlib":
                rows.append(floor_row(redis_proc, dataset, "stdlib", "floor_stdlib", round_))
            elif name == "naive":
                rows.append(naive_row(redis_proc, client, dataset, args, round_))
                if "reaper" in args.rows:
                    dataset = fill(redis_proc, client, args)
            else:
                rows += reaper_rows(redis_proc, client, args, dataset, round_)
    return rows


def reaper_rows(redis_proc, client, args, dataset, round_: int) -> list[Row]:
    """The reaper row and, with --against-path, the other reaper's, each on a fresh fill (a run
    reaps), turn about: this checkout's first in odd rounds, the other's in even ones, so that a
    host drifting within the round favours neither."""
    which = [("reaper", args.reaper_path)] + ([("against", args.against_path)] if args.against_path else [])
    if round_ % 2 == 0:
        which.reverse()
    rows = []
    for i, (name, path) in enumerate(which):
        if i:
            dataset = fill(redis_proc, client, args)
        rows.append(reaper_row(redis_proc, client, args, dataset, round_, name, path))
    return rows


def choose_parser(client, sample: int = 5000, rounds: int = 5) -> str:
    """The floor's parser: whichever installed one reads a sample of this very data fastest
    (records and entries, best of ``rounds``). Printed, with each one's cost."""
    keys = [key for batch in _take(workloads._scan(client), sample) for key in batch][:sample]
    values = client.mget(keys)
    _, page = client.hscan(data.ONLINE, 0, count=sample)
    fields, entries = list(page), list(page.values())
    prefix, costs = b"guest_", {}
    for name, parser in workloads.available_parsers().items():
        best_records = best_entries = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            parser.records(values)
            middle = time.perf_counter()
            parser.entries(fields, entries, prefix)
            best_records = min(best_records, middle - started)
            best_entries = min(best_entries, time.perf_counter() - middle)
        costs[name] = (best_records / len(values) * 1e6, best_entries / max(1, len(entries)) * 1e6)
    fast = {name: cost for name, cost in costs.items() if name != "stdlib"} or costs
    chosen = min(fast, key=lambda name: sum(fast[name]))
    print("  parsers, us per record / per entry (best of %d on %d records): %s -> floor uses %s"
          % (rounds, len(values), ", ".join(f"{n} {r:.2f} / {e:.2f}" for n, (r, e) in costs.items()),
             chosen), flush=True)
    if chosen == "stdlib":
        print("  (neither msgspec nor orjson is installed: pip install -e '.[bench]')", flush=True)
    return chosen


def _take(batches, count: int):
    seen = 0
    for batch in batches:
        yield batch
        seen += len(batch)
        if seen >= count:
            return


def floor_row(redis_proc, dataset, parser: str, name: str, round_: int = 1,
              reader: str = "pipelined") -> Row:
    run, ping = measured(redis_proc, [sys.executable, WORKLOADS, "floor", redis_proc.url, parser, reader])
    figures = last_json(run.output)
    right = figures["stale"] == dataset.stale and figures["orphans"] == 0 and figures["malformed"] == 0
    print(f"  {name} done in {run.wall_s:.1f}s", flush=True)
    note = (f"{figures['parser']}, {figures['reader']}: {figures['records']:,} records ({figures['stale']:,} stale), "
            f"{figures['entries']:,} entries, {figures['exists_sent']:,} EXISTS, "
            f"{figures['orphans']:,} orphans" + ("" if right else " WRONG COUNT"))
    return child_row(name, run, ping, figures["work_s"], note=note, round=round_,
                     work_cpu_s=figures["work_cpu_s"])


def naive_row(redis_proc, client, dataset, args, round_: int = 1) -> Row:
    run, ping = measured(redis_proc, [sys.executable, WORKLOADS, "naive", redis_proc.url,
                                      str(data.CONNECTION_TIMEOUT_S)])
    left = data.leftovers(client, dataset.guests, args.stale)
    figures = last_json(run.output)
    print(f"  naive done in {run.wall_s:.1f}s", flush=True)
    return child_row("naive", run, ping, figures["work_s"], reaped=reaped_text(left, dataset),
                     round=round_, work_cpu_s=figures.get("work_cpu_s"))


def reaper_row(redis_proc, client, args, dataset, round_: int = 1, name: str = "reaper",
               path: str | None = None) -> Row:
    with tempfile.TemporaryDirectory(prefix="reaper-bench-") as cwd:  # no stray ./reaper.toml
        run, ping = measured(redis_proc, reaper_cmd(args.profile, args.profile_out),
                             env=reaper_env(redis_proc.url, reaper_path=path, extra=args.reaper_env), cwd=cwd)
    if args.reaper_log:
        Path(args.reaper_log).write_text(run.output)
    match = SWEEP_LINE.search(run.output)
    left = data.leftovers(client, dataset.guests, args.stale)
    pending = client.hlen("reaper:cascade:intents")
    note = f"exit {run.returncode}; intents left {pending}" + (" [profiled]" if args.profile else "")
    print(f"  {name} done in {run.wall_s:.1f}s", flush=True)
    return child_row(name, run, ping, float(match.group(2)) if match else None,
                     reaped=reaped_text(left, dataset), note=note, round=round_)


def print_sweep_table(rows: list[Row], args) -> None:
    print(f"\nN = {args.guests:,} guests, {args.stale:.0%} stale, {args.registered:,} registered "
          f"users; {os.cpu_count()} cores; {_load()}; PING client: {rows[0].ping['sched']}")
    header = (f"{'row':<16} {'wall s':>7} {'work s':>7} {'CPU s':>6} {'Redis CPU':>9} {'scripts':>7} "
              f"{'RSS MB':>6} {'PING p50':>8} {'p99':>6} {'max ms':>7} {'slow>1ms':>8} {'slowest':>14}  stale reaped")
    print(header + "\n" + "-" * len(header))
    for row in rows:
        name = row.name if args.repeat == 1 or row.name == "idle" else f"{row.name} #{row.round}"
        print(f"{name:<16} {_cell(row.wall_s, 7, 2)} {_cell(row.work_s, 7, 2)} {_cell(row.cpu_s, 6, 2)} "
              f"{_cell(row.redis_cpu_s, 9, 2)} {_cell(row.scripts_s, 7, 2)} {_cell(row.rss_mb, 6, 0)} "
              f"{row.ping['p50_ms']:8.2f} "
              f"{row.ping['p99_ms']:6.2f} {row.ping['max_ms']:7.1f} {row.ping['slow_count']:>8} "
              f"{row.ping['slowest_ms']:5.1f} {row.ping['slowest_cmd']:<8}  {row.reaped}   {row.note}")
    if args.repeat > 1:
        print_medians(rows)
    print_targets(rows)


COLUMNS = (("wall s", "wall_s"), ("work s", "work_s"), ("CPU s", "cpu_s"),
           ("Redis CPU s", "redis_cpu_s"), ("in scripts s", "scripts_s"), ("RSS MB", "rss_mb"))


def _values(rows: list[Row], column: str) -> list[float]:
    if column.startswith("ping."):
        return [row.ping[column[5:]] for row in rows]
    return [getattr(row, column) for row in rows if getattr(row, column) is not None]


def print_medians(rows: list[Row]) -> None:
    """Median (min-max) of each column over the rounds, per row."""
    print("\nmedian (min-max) over the rounds:")
    for name in ROW_ORDER + ("against",):
        mine = [row for row in rows if row.name == name]
        if not mine:
            continue
        cells = [f"{label} {_spread(_values(mine, column))}" for label, column in
                 COLUMNS + (("PING p99 ms", "ping.p99_ms"),) if _values(mine, column)]
        print(f"  {name:<13} " + ";  ".join(cells))


def print_targets(rows: list[Row]) -> None:
    """Issue #14's targets: each ratio per round (same fill, same hour), then its median."""
    by = {(row.name, row.round): row for row in rows}
    rounds = sorted({row.round for row in rows if row.name != "idle"})
    print()
    limit = TARGETS["reaper/floor"]
    for name in ("reaper", "against"):  # against (--against-path): the other reaper, for comparison
        pairs = [(by[(name, n)], by[("floor", n)]) for n in rounds if (name, n) in by and ("floor", n) in by]
        for label, column in (("wall", "wall_s"), ("work", "work_s"), ("process CPU", "cpu_s"),
                              ("Redis CPU", "redis_cpu_s")):
            ratios = [getattr(r, column) / getattr(f, column) for r, f in pairs
                      if getattr(r, column) and getattr(f, column)]
            if ratios:
                verdict = "" if column == "work_s" else ("  met" if statistics.median(ratios) <= limit else "  NOT MET")
                print(f"{name + '/floor ' + label:<25} {_summary(ratios)}   target <= {limit}{verdict}")
        outside = [(r.redis_cpu_s - r.scripts_s) / f.redis_cpu_s for r, f in pairs
                   if r.redis_cpu_s and r.scripts_s is not None and f.redis_cpu_s]
        if outside:  # the reads against the floor's: what the takes' scripts leave of Redis CPU
            print(f"{name + '/floor Redis CPU outside scripts':<25} {_summary(outside)}   (no target: the floor "
                  f"runs none, so the rest of the ratio is the takes')")
    for other in ("floor_serial", "floor_stdlib"):
        pairs = [(by[(other, n)], by[("floor", n)]) for n in rounds if (other, n) in by and ("floor", n) in by]
        if pairs:
            print(f"{other + '/floor wall':<24} {_summary([o.wall_s / f.wall_s for o, f in pairs])}")
    naive = [(by[("naive", n)], by[("reaper", n)]) for n in rounds if ("naive", n) in by and ("reaper", n) in by]
    if naive:
        ratios = [n.wall_s / r.wall_s for n, r in naive]
        verdict = "met" if statistics.median(ratios) >= TARGETS["naive/reaper"] else "NOT MET"
        print(f"naive/reaper wall        {_summary(ratios)}   target >= {TARGETS['naive/reaper']:.0f}  {verdict}")
    reapers = [row for row in rows if row.name == "reaper"]
    if reapers:
        rss = max(r.rss_mb for r in reapers)
        p99 = statistics.median(r.ping["p99_ms"] for r in reapers)
        print(f"reaper peak RSS {rss:.0f} MB (target <= {TARGETS['rss_mb']:.0f}: "
              f"{'met' if rss <= TARGETS['rss_mb'] else 'NOT MET'}), PING p99 "
              f"{_summary([r.ping['p99_ms'] for r in reapers])} ms (target <= "
              f"{TARGETS['ping_p99_ms']:.0f}: {'met' if p99 <= TARGETS['ping_p99_ms'] else 'NOT MET'})")


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _summary(values: list[float]) -> str:
    """One figure, or their median, min-max and each round's (what --repeat is for: a drifting machine)."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return (f"{statistics.median(values):.2f} median ({min(values):.2f}-{max(values):.2f}; "
            f"{', '.join(f'{v:.2f}' for v in values)})")


def _load() -> str:
    """Other processes on this machine skew every figure: say how busy it was."""
    return "load average at the end %.1f / %.1f / %.1f (1/5/15 min)" % os.getloadavg()


def _cell(value: float | None, width: int, decimals: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{decimals}f}"


# -- cascade mode ------------------------------------------------------------------------------

class FastStandIn:
    """bench/fast_standin.py in its own process."""

    def __enter__(self) -> "FastStandIn":
        self.proc = subprocess.Popen([sys.executable, str(BENCH / "fast_standin.py")],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"fast stand-in did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        self.http = httpx.Client(base_url=self.url)
        return self

    def __exit__(self, *exc) -> None:
        self.http.close()
        self.proc.kill()
        self.proc.wait()

    def reset(self) -> None:
        self.http.post("/_reset").raise_for_status()

    def stats(self) -> dict:
        return self.http.get("/_stats").json()


def rate(stats: dict) -> float:
    span = (stats["last"] or 0) - (stats["first"] or 0)
    return stats["deletes"] / span if span > 0 else float("nan")


def cascade_mode(redis_proc: RedisProcess, client, args) -> dict:
    """reaper's DELETEs/s and the plain loop's, ``--repeat`` times alternately."""
    results = {"rounds": []}
    with FastStandIn() as standin:
        for round_ in range(1, args.repeat + 1):
            results["rounds"].append(_cascade_round(redis_proc, client, standin, args))
    if args.compare_standin:
        results["httpx_vs_tests_standin"] = _httpx_against_tests_standin(args.cascade_guests, args.concurrency)
    return results


def _cascade_round(redis_proc: RedisProcess, client, standin: "FastStandIn", args) -> dict:
    k, concurrency, results = args.cascade_guests, args.concurrency, {}
    started = time.perf_counter()
    data.fill(redis_proc, client, k, 1.0, 0)
    print(f"  filled {k:,} stale guests in {time.perf_counter() - started:.1f}s", flush=True)
    standin.reset()
    with tempfile.TemporaryDirectory(prefix="reaper-bench-") as cwd:
        # --force: all K guests are stale, which the mass-expiry guard would otherwise cap.
        run = run_child(reaper_cmd(args.profile, args.profile_out, "--force"),
                        env=reaper_env(redis_proc.url, standin.url, concurrency, args.reaper_path,
                                       args.reaper_env),
                        cwd=cwd)
    if args.reaper_log:
        Path(args.reaper_log).write_text(run.output)
    stats = standin.stats()
    results["reaper"] = {**stats, "rate": rate(stats), "wall_s": run.wall_s, "rss_mb": run.rss_mb,
                         "exit": run.returncode, "intents_left": client.hlen("reaper:cascade:intents")}
    standin.reset()
    run = run_child([sys.executable, WORKLOADS, "httpx", standin.url, str(k), str(concurrency)])
    stats = standin.stats()
    results["httpx"] = {**stats, "rate": rate(stats), "wall_s": run.wall_s, "rss_mb": run.rss_mb,
                        "exit": run.returncode}
    return results


def _httpx_against_tests_standin(k: int, concurrency: int) -> dict:
    """The same plain loop against tests/support/standin.StandIn: is that one the bottleneck?"""
    from support.standin import StandIn
    with StandIn() as standin:
        run = run_child([sys.executable, WORKLOADS, "httpx", standin.url, str(k), str(concurrency)])
        times = [r.at for r in standin.calls("DELETE", "/auth/guest/")]
    span = max(times) - min(times) if len(times) > 1 else 0
    return {"deletes": len(times), "rate": len(times) / span if span else float("nan"),
            "wall_s": run.wall_s}  # that child's RSS is no figure of interest here


def print_cascade_table(results: dict, args) -> None:
    print(f"\nCascade: {args.cascade_guests:,} stale guests, auth-service DELETE concurrency "
          f"{args.concurrency}, loopback bench/fast_standin.py; {os.cpu_count()} cores; {_load()}")
    header = (f"{'side':<22} {'DELETEs':>8} {'DELETE/s':>9} {'wall s':>7} {'RSS MB':>7} "
              f"{'pauses>10ms':>12} {'paused s':>9}")
    print(header + "\n" + "-" * len(header))
    rounds = results["rounds"]
    sides = [(f"{label}{'' if len(rounds) == 1 else f' {n}'}", r[name]) for n, r in enumerate(rounds, 1)
             for name, label in (("reaper", "reaper run --once"), ("httpx", "plain httpx loop"))]
    if "httpx_vs_tests_standin" in results:
        sides.append(("httpx vs tests StandIn", results["httpx_vs_tests_standin"]))
    for label, r in sides:
        print(f"{label:<22} {r['deletes']:>8,} {r['rate']:>9.0f} {r['wall_s']:>7.2f} "
              f"{_cell(r.get('rss_mb'), 7, 0)} {r.get('gaps', '-'):>12} {_cell(r.get('gap_s'), 9, 2)}")
    shares = [r["reaper"]["rate"] / r["httpx"]["rate"] for r in rounds]
    print(f"\nreaper/httpx: {_summary(shares)}   target >= {TARGETS['cascade_share']}   (reaper exit "
          f"{', '.join(str(r['reaper']['exit']) for r in rounds)}, intents left "
          f"{', '.join(str(r['reaper']['intents_left']) for r in rounds)})")


# -- main --------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("sweep", "cascade"), default="sweep")
    parser.add_argument("--guests", type=int, default=100_000, help="N guests (sweep mode)")
    parser.add_argument("--stale", type=float, default=0.1, help="stale fraction (sweep mode)")
    parser.add_argument("--registered", type=int, default=None,
                        help="registered users in users:online (default N/100, at least 10)")
    parser.add_argument("--rows", default="floor,floor_serial,floor_stdlib,naive,reaper",
                        help="which rows to measure (comma-separated: " + ",".join(ROW_ORDER) + ")")
    parser.add_argument("--floor-parser", choices=tuple(workloads.PARSERS),
                        help="the floor row's parser (default: the fastest installed, measured on the data)")
    parser.add_argument("--idle-s", type=float, default=2.0, help="PING baseline duration")
    parser.add_argument("--ping-sched", choices=("fifo", "other"), default="fifo",
                        help="the PING client's thread: real-time (SCHED_FIFO, where permitted: root), "
                             "or an ordinary thread that waits for a core like the rows' processes")
    parser.add_argument("--repeat", type=int, default=1, metavar="K",
                        help="measure every row K times, a round after another (refilled each time), "
                             "and give medians: one round is at the mercy of a drifting machine")
    parser.add_argument("--cascade-guests", type=int, default=20_000, help="K stale guests (cascade mode)")
    parser.add_argument("--concurrency", type=int, default=16, help="DELETEs in flight (cascade mode)")
    parser.add_argument("--compare-standin", action="store_true",
                        help="cascade mode: also time the httpx loop against tests' StandIn")
    parser.add_argument("--profile", choices=("py-spy", "py-spy-cpu", "cprofile"), help="profile the reaper run "
                        "(its RSS is then the profiler's, not reaper's)")
    parser.add_argument("--profile-out", default="/tmp/reaper-profile.txt")
    parser.add_argument("--reaper-path", help="import reaper from this directory instead of the "
                        "installed one (PYTHONPATH of the reaper run)")
    parser.add_argument("--against-path", metavar="DIR", help="another copy of the package (e.g. a git "
                        "worktree of an older commit) run beside this one in every round, turn about, each on "
                        "a fresh fill: row 'against', with its own ratios to the same floor")
    parser.add_argument("--reaper-env", action="append", default=[], metavar="REAPER_X_Y=VALUE",
                        help="extra environment for the reaper run (repeatable)")
    parser.add_argument("--reaper-log", help="write the reaper run's output here")
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.registered is None:
        args.registered = max(10, args.guests // 100)
    args.rows = set(args.rows.split(","))
    if args.rows - set(ROW_ORDER):
        parser.error(f"unknown rows {sorted(args.rows - set(ROW_ORDER))}: choose from {','.join(ROW_ORDER)}")
    args.reaper_env = dict(item.split("=", 1) for item in args.reaper_env)
    return args


def main(argv=None) -> int:
    global ping_sched
    args = parse_args(argv)
    ping_sched = args.ping_sched
    print(f"reaper from {compile_reaper(args.reaper_path)}, byte-compiled", flush=True)
    if args.against_path:
        print(f"against: reaper from {compile_reaper(args.against_path)}, byte-compiled", flush=True)
    with RedisProcess() as redis_proc:
        client = redis_proc.client(socket_timeout=120)
        print(f"private redis-server on port {redis_proc.port}", flush=True)
        if args.mode == "sweep":
            rows = sweep_mode(redis_proc, client, args)
            print_sweep_table(rows, args)
            results = [row.__dict__ for row in rows]
        else:
            results = cascade_mode(redis_proc, client, args)
            print_cascade_table(results, args)
        client.close()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
