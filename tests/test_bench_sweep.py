"""bench/sweep.py measures reaper as an installed reaper runs: from bytecode, whatever
PYTHONDONTWRITEBYTECODE says (pip compiles what it installs; the floor's imports are compiled)."""

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import sweep as bench  # noqa: E402
from support.redis_proc import RedisProcess  # noqa: E402


def test_the_reaper_a_row_runs_is_byte_compiled_first(tmp_path):
    shutil.copytree(ROOT / "reaper", tmp_path / "reaper", ignore=shutil.ignore_patterns("__pycache__"))

    where = bench.compile_reaper(str(tmp_path))  # as --reaper-path DIR runs it

    assert where == tmp_path / "reaper"
    sources = {p.relative_to(where).with_suffix("") for p in where.rglob("*.py")}
    compiled = {(p.parent.parent / p.name.split(".")[0]).relative_to(where) for p in where.rglob("__pycache__/*.pyc")}
    assert sources and sources == compiled


def test_another_reaper_is_run_beside_this_one_turn_about_with_its_own_ratios(tmp_path, capsys):
    """--against-path: each round the other copy runs too, on a fresh fill, first in even rounds."""
    shutil.copytree(ROOT / "reaper", tmp_path / "reaper", ignore=shutil.ignore_patterns("__pycache__"))

    assert bench.main(["--guests", "400", "--rows", "floor,reaper", "--against-path", str(tmp_path),
                       "--repeat", "2", "--idle-s", "0.05"]) == 0

    out = capsys.readouterr().out
    table = [line.split()[:2] for line in out.splitlines() if line.startswith(("reaper #", "against #", "floor #"))]
    assert table == [["floor", "#1"], ["reaper", "#1"], ["against", "#1"],
                     ["floor", "#2"], ["against", "#2"], ["reaper", "#2"]]
    runs = [line for line in out.splitlines() if line.startswith(("reaper #", "against #"))]
    assert all("40/40 all" in line and "exit 0" in line for line in runs)
    for name in ("reaper", "against"):
        assert f"{name}/floor process CPU" in out and f"{name}/floor Redis CPU" in out
    assert f"against: reaper from {tmp_path / 'reaper'}, byte-compiled" in out


def fifo_threads() -> int:
    """Threads of this process in the real-time class SCHED_FIFO now."""
    found = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            found += os.sched_getscheduler(int(tid)) == os.SCHED_FIFO
        except OSError:  # ended meanwhile
            pass
    return found


def wait_for_pings(pinger: bench.Pinger, count: int, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while len(pinger.samples) < count:
        assert time.monotonic() < deadline, "the PING client sent nothing"
        time.sleep(0.01)


@pytest.fixture
def private_redis():
    with RedisProcess() as server:
        yield server


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may put a thread in SCHED_FIFO")
def test_the_ping_client_runs_in_the_real_time_class_while_it_pings_and_only_then(private_redis, monkeypatch):
    monkeypatch.setattr(bench, "ping_sched", "fifo")
    before = fifo_threads()
    with bench.Pinger(private_redis) as pinger:
        wait_for_pings(pinger, 5)
        assert fifo_threads() == before + 1
    assert fifo_threads() == before
    stats = pinger.stats()
    assert stats["sched"] == f"real-time thread (SCHED_FIFO {bench.PING_RT_PRIORITY})"
    assert stats["pings"] >= 5 and 0 < stats["p50_ms"] <= stats["p99_ms"] <= stats["max_ms"]


def test_a_ping_client_refused_the_real_time_class_still_pings_and_says_so(private_redis, monkeypatch):
    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(bench, "ping_sched", "fifo")
    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with bench.Pinger(private_redis) as pinger:
        wait_for_pings(pinger, 5)
    assert pinger.stats()["sched"] == "ordinary thread (real-time refused: [Errno 1] Operation not permitted)"
    assert pinger.stats()["pings"] >= 5


def test_an_ordinary_ping_client_is_asked_for(private_redis, monkeypatch):
    monkeypatch.setattr(bench, "ping_sched", "other")
    before = fifo_threads()
    with bench.Pinger(private_redis) as pinger:
        wait_for_pings(pinger, 5)
        assert fifo_threads() == before
    assert pinger.stats()["sched"] == "ordinary thread (--ping-sched other)"


@pytest.mark.parametrize("script, least_s", [(True, 0.001), (False, 0.0)])
def test_a_row_says_how_much_of_redis_time_went_to_scripts(private_redis, script, least_s):
    """A child that runs a script for a few ms shows that time as the row's; one that runs none, 0."""
    busy = "r.eval('local n = 0 for i = 1, 3000000 do n = n + i end return n', 0)" if script else "r.ping()"
    child = [sys.executable, "-c", f"import redis; r = redis.Redis(port={private_redis.port}); {busy}"]

    run, figures = bench.measured(private_redis, child)

    assert run.returncode == 0
    assert figures["scripts_s"] >= least_s if script else figures["scripts_s"] == 0.0
