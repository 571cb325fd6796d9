"""Variants of reaper measured against each other in one process, on one private Redis, each run on
a fresh fill, the variants alternated round after round: on a host whose speed drifts within
minutes, the one comparison that still says something about the code.

    python bench/inprocess.py --guests 300000 --rounds 8 \\
        --variant values= --variant digests=reaper.sweep.budget:MAX_HELD_VALUES_BYTES=0
    python bench/inprocess.py --guests 1000000 --rounds 4 --variant now= \\
        --variant default-gil=reaper.core.gil:SWITCH_S=0.005 --variant quick-always=switchinterval=0.0001

A variant is NAME=SETTINGS, SETTINGS comma-separated, each ``module:NAME=literal`` (a module
constant set for the variant's runs and put back after) or ``switchinterval=SECONDS`` (the
interpreter's switch interval for the run). Each run is `reaper run --once` in this process,
downstream services off, as bench/sweep.py runs it; the sweep's two phases are timed (wall, this
process's CPU) and, for the second look, Redis's own CPU (INFO cpu) and the EVALSHA time it
counted (INFO commandstats). Prints every run and the median of each column per variant.

    python bench/inprocess.py --guests 1000000 --rounds 2 --variant now= \
        --part quick=reaper.sweep.judging:PageJudge.quick --part skew=reaper.core.skew:Skew.add_all

A part is NAME=module:QUALIFIED.NAME, a function or method as its callers look it up: the CPU
time of the threads that run it (``time.thread_time``) inside it is added up over each run and
printed as one more column. A profiler's samples of a sweep are skewed by the profiler; a part's
thread time is what the sweep itself spent there, in the same run as every other part.
"""

import argparse
import ast
import gc
import importlib
import os
import inspect
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
sys.path.insert(0, str(BENCH))

import sweep as bench  # noqa: E402
import sweep_data as data  # noqa: E402
import take_cost  # noqa: E402
from support.redis_proc import RedisProcess  # noqa: E402

from reaper.app import cli  # noqa: E402
from reaper.sweep import sweep as sweeping  # noqa: E402

COLUMNS = ("wall", "cpu", "first_wall", "first_cpu", "second_wall", "second_cpu", "second_redis_cpu",
           "second_evalsha")


def parse_variant(text: str) -> tuple[str, list[tuple[str, str, object]]]:
    """NAME=module:ATTR=literal,... -> (NAME, [(module, attr, value)]); module "" for switchinterval."""
    name, _, settings = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"a variant needs a name: {text!r}")
    parsed = []
    for setting in filter(None, settings.split(",")):
        target, _, literal = setting.partition("=")
        module, _, attr = target.rpartition(":")
        if target != "switchinterval" and not (module and attr):
            raise argparse.ArgumentTypeError(f"not module:NAME=value nor switchinterval=s: {setting!r}")
        try:
            value = ast.literal_eval(literal)
        except (ValueError, SyntaxError) as exc:
            raise argparse.ArgumentTypeError(f"not a Python literal in {setting!r}: {exc}") from None
        if module and not hasattr(_module(module, setting), attr):
            raise argparse.ArgumentTypeError(f"{module} has no {attr}: {setting!r}")
        parsed.append((module, attr, value))
    return name, parsed


def parse_part(text: str) -> tuple[str, object, str]:
    """NAME=module:Qualified.name -> (NAME, the object holding the function, its attribute name)."""
    name, _, target = text.partition("=")
    module, _, qualified = target.partition(":")
    if not (name and module and qualified):
        raise argparse.ArgumentTypeError(f"not NAME=module:QUALIFIED.NAME: {text!r}")
    *path, attr = qualified.split(".")
    owner = _module(module, text)
    for step in path:
        owner = getattr(owner, step, None)
    if not callable(getattr(owner, attr, None)):
        raise argparse.ArgumentTypeError(f"no function {qualified} in {module}: {text!r}")
    return name, owner, attr


class Parts:
    """The thread CPU spent inside each part, in whichever thread runs it, while ``installed``.
    A part called again from inside itself is timed once, at the outermost call."""

    def __init__(self, parts: list[tuple[str, object, str]]):
        self.parts, self.spent = parts, dict.fromkeys([name for name, _, _ in parts], 0.0)
        self._depth = threading.local()

    @contextmanager
    def installed(self):
        # (owner, attr, what it finds, whether it is the owner's own or inherited)
        saved = [(owner, attr, inspect.getattr_static(owner, attr), attr in vars(owner))
                 for _, owner, attr in self.parts]
        try:
            for (name, owner, attr), (_, _, found, _) in zip(self.parts, saved):
                setattr(owner, attr, self._timed(name, found))
            yield self
        finally:
            for owner, attr, found, own in reversed(saved):
                setattr(owner, attr, found) if own else delattr(owner, attr)

    def _timed(self, name: str, found):
        kind = type(found) if isinstance(found, (staticmethod, classmethod)) else None
        function = found.__func__ if kind else found
        depth = self._depth

        def timed(*args, **kwargs):
            outermost = not getattr(depth, name, 0)
            setattr(depth, name, getattr(depth, name, 0) + 1)
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                setattr(depth, name, getattr(depth, name) - 1)
                if outermost:
                    self.spent[name] += time.thread_time() - started
        return kind(timed) if kind else timed

    def figures(self) -> dict[str, float]:
        """What each part spent since the last call."""
        spent, self.spent = self.spent, dict.fromkeys(self.spent, 0.0)
        return spent


def _module(name: str, setting: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise argparse.ArgumentTypeError(f"no module {name}: {setting!r}") from None


@contextmanager
def applied(settings: list[tuple[str, str, object]]):
    saved_interval, undo = sys.getswitchinterval(), []
    try:
        for module, attr, value in settings:
            if not module:
                sys.setswitchinterval(value)
                continue
            where = importlib.import_module(module)
            undo.append((where, attr, getattr(where, attr)))
            setattr(where, attr, value)
        yield
    finally:
        for where, attr, value in reversed(undo):
            setattr(where, attr, value)
        sys.setswitchinterval(saved_interval)


class Phases:
    """The sweep's first pass and second look, timed by wrapping the functions that run them
    while ``installed``."""

    def __init__(self):
        self.figures: dict[str, float] = {}
        self._first, self._second = sweeping._first_pass, sweeping._second_look

    @contextmanager
    def installed(self):
        sweeping._first_pass, sweeping._second_look = self._timed_first, self._timed_second
        try:
            yield self
        finally:
            sweeping._first_pass, sweeping._second_look = self._first, self._second

    def _timed_first(self, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return self._first(*args)
        finally:
            self.figures.update(first_wall=time.perf_counter() - wall, first_cpu=time.process_time() - cpu)

    def _timed_second(self, setup, *args):
        client = setup.client
        client.config_resetstat()
        redis_cpu, wall, cpu = bench.redis_cpu_s(client), time.perf_counter(), time.process_time()
        self._second(setup, *args)
        self.figures.update(second_wall=time.perf_counter() - wall, second_cpu=time.process_time() - cpu,
                            second_redis_cpu=bench.redis_cpu_s(client) - redis_cpu,
                            second_evalsha=take_cost.evalsha_usec(client) / 1e6)


@contextmanager
def reaper_settings(redis_url: str):
    """reaper's environment as bench/sweep.py sets it, and its collector's threshold as its main()
    sets it; both put back after."""
    environ, threshold = dict(os.environ), gc.get_threshold()
    os.environ.update({k: v for k, v in bench.reaper_env(redis_url).items() if k.startswith("REAPER_")})
    os.environ["REAPER_LOG_LEVEL"] = "WARNING"  # a line a run, not the sweep's INFO
    gc.set_threshold(cli.GC_YOUNG_THRESHOLD, *threshold[1:])
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environ)
        gc.set_threshold(*threshold)


def run_once(phases: Phases, parts: Parts | None = None) -> dict[str, float]:
    phases.figures = dict.fromkeys(COLUMNS[2:], 0.0)  # a run with no second look leaves zeros
    if parts is not None:
        parts.figures()  # what a run before spent is not this one's
    wall, cpu = time.perf_counter(), time.process_time()
    try:  # reaper exits by sys.exit; click hands back an exit of its own
        code = cli.cli.main(["run", "--once"], prog_name="reaper", standalone_mode=False)
    except SystemExit as exit_:
        code = exit_.code
    if code not in (0, None):
        raise SystemExit(f"reaper run --once exited {code}: not a run to time")
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, **phases.figures,
            **(parts.figures() if parts is not None else {})}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guests", type=int, default=300_000)
    parser.add_argument("--stale", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--variant", type=parse_variant, action="append", required=True,
                        help="NAME=SETTINGS (repeat; at least two to compare)")
    parser.add_argument("--part", type=parse_part, action="append", default=[],
                        help="NAME=module:QUALIFIED.NAME: the thread CPU spent in it, a column (repeat)")
    args = parser.parse_args(argv)
    if len({name for name, _, _ in args.part}) < len(args.part):
        parser.error("two parts of one name")
    columns = COLUMNS + tuple(name for name, _, _ in args.part)
    results = {name: [] for name, _ in args.variant}
    with RedisProcess() as redis_proc, Phases().installed() as phases, reaper_settings(redis_proc.url), \
            Parts(args.part).installed() as parts:
        client = redis_proc.client(socket_timeout=120)
        for round_ in range(args.rounds):
            for name, settings in args.variant if round_ % 2 == 0 else args.variant[::-1]:
                data.fill(redis_proc, client, args.guests, args.stale, max(10, args.guests // 100))
                with applied(settings):
                    results[name].append(run_once(phases, parts))
                print(f"round {round_ + 1} {name:14} " + " ".join(f"{results[name][-1][c]:7.3f}" for c in columns),
                      flush=True)
    print(f"\nmedians, s ({args.guests:,} guests, {args.stale:.0%} stale, {args.rounds} rounds):")
    print(f"{'variant':14} " + " ".join(f"{c:>16}" for c in columns))
    for name, runs in results.items():
        print(f"{name:14} " + " ".join(f"{statistics.median(r[c] for r in runs):16.3f}" for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
