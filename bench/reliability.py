"""Issue #3's "done when" scenarios, measured for real: private redis-server, loopback auth stand-in,
real `python -m reaper run` daemons, faults injected from outside.

    python bench/reliability.py outage       # auth 503 for 60 s, the daemon SIGKILLed and restarted midway
    python bench/reliability.py replicas     # three daemons side by side, then the leader SIGKILLed
    python bench/reliability.py mass-expiry  # 1000 guests that all look stale at once, then --force

Each prints its figures and exits non-zero when an expectation fails.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.guests import World  # noqa: E402
from support.redis_proc import RedisProcess  # noqa: E402
from support.standin import StandIn, wait_for  # noqa: E402

FAST = {"REAPER_TIMING_HEARTBEAT_INTERVAL": "2s", "REAPER_TIMING_CASCADE_INTERVAL": "500ms",
        "REAPER_CASCADE_CLAIM_TIMEOUT": "5s", "REAPER_STARTUP_PURGE": "off",
        "REAPER_USER_SERVICE_BASE_URL": "", "REAPER_MONGO_URI": "", "REAPER_LOG_LEVEL": "INFO"}


class Daemons:
    """Real reaper processes, each logging to its own file; all killed on exit."""

    def __init__(self, redis_url: str, auth_url: str, logdir: Path):
        self.env = {**os.environ, **FAST, "REAPER_REDIS_URL": redis_url,
                    "REAPER_AUTH_SERVICE_BASE_URL": auth_url}
        self.logdir, self.procs = logdir, []

    def start(self, *args: str) -> subprocess.Popen:
        log = open(self.logdir / f"reaper-{len(self.procs)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "reaper", "run", *args], env=self.env,
                                stdout=log, stderr=log, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def run_once(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "reaper", "run", "--once", *args], env=self.env,
                              capture_output=True, text=True, timeout=120, cwd=ROOT)

    def stop_all(self) -> list[int]:
        codes = []
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                codes.append(proc.wait(timeout=20))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        return codes


def populate(world: World, stale: int, live: int, start: int = 0) -> tuple[set, set]:
    pipe_world = World(world.r)
    dead = {pipe_world.guest(start + i, age=400)[0] for i in range(stale)}
    alive = {pipe_world.guest(start + stale + i, age=5, ttl=86400)[0] for i in range(live)}
    return dead, alive


def answered(auth: StandIn) -> Counter:
    return Counter(auth.deleted_guests())


def check(ok: bool, what: str, failures: list) -> None:
    print(("  ok   " if ok else "  FAIL ") + what)
    if not ok:
        failures.append(what)


def outage(args, redis_server, auth, daemons) -> list:
    failures: list = []
    world = World(redis_server.client())
    dead, alive = populate(world, stale=300, live=200)
    auth.fail(503, path_prefix="/auth/guest/")
    started = time.monotonic()
    first = daemons.start()
    time.sleep(args.outage / 3)
    first.kill()  # SIGKILL, midway through the outage
    print(f"  SIGKILLed the first daemon at {time.monotonic() - started:.1f}s; starting another")
    daemons.start()
    time.sleep(max(0.0, args.outage - (time.monotonic() - started)))
    auth.heal()
    healed = time.monotonic()
    during = len(auth.calls("DELETE"))
    print(f"  auth-service healed at {healed - started:.1f}s; DELETEs tried during the outage: {during}")
    done = wait_for(lambda: set(answered(auth)) >= dead, timeout=args.outage + 60)
    last = max((r.at for r in auth.requests if r.status == 200 and r.method == "DELETE"), default=healed)
    counts = answered(auth)
    check(done, f"every reaped guest's DELETE answered 200 ({len(set(counts) & dead)}/{len(dead)})", failures)
    check(last - healed <= 60, f"the last one {last - healed:.1f}s after the outage ended (<= 60 s)", failures)
    check(not (set(counts) & alive), "no DELETE for a live guest", failures)
    print(f"  guests DELETEd (200) more than once: {sum(1 for c in counts.values() if c > 1)}")
    return failures


def lease_holder(r) -> str | None:
    value = r.get("reaper:leader")
    return value.decode() if value else None


def replicas(args, redis_server, auth, daemons) -> list:
    failures: list = []
    r = redis_server.client()
    world = World(r)
    dead, alive = populate(world, stale=300, live=200)
    for _ in range(3):
        daemons.start()
    wait_for(lambda: set(answered(auth)) >= dead, timeout=60)
    counts = answered(auth)
    check(set(counts) == dead and set(counts.values()) == {1},
          f"three daemons: exactly one DELETE per reaped guest ({sum(counts.values())} for {len(dead)})",
          failures)
    holder = lease_holder(r)
    pids = {str(p.pid): p for p in daemons.procs}
    leader = next((p for pid, p in pids.items() if holder and f":{pid}:" in f":{holder}:"), None)
    check(leader is not None, f"the lease names a running daemon ({holder})", failures)
    if leader is None:
        return failures
    leader.kill()
    killed = time.monotonic()
    taken = wait_for(lambda: lease_holder(r) not in (None, holder), timeout=30)
    took = time.monotonic() - killed
    check(taken and took <= 15, f"another daemon took over {took:.1f}s after the leader's SIGKILL (<= 15 s)",
          failures)
    more, _ = populate(world, stale=50, live=0, start=10_000)
    wait_for(lambda: set(answered(auth)) >= dead | more, timeout=60)
    counts = answered(auth)
    check(set(counts) >= more, "the new leader reaps guests that died after the takeover", failures)
    check(not (set(counts) & alive), "no DELETE for a live guest", failures)
    return failures


def mass_expiry(args, redis_server, auth, daemons) -> list:
    failures: list = []
    world = World(redis_server.client())
    dead, _ = populate(world, stale=1000, live=0)
    first = daemons.run_once()
    reaped = len(answered(auth))
    check("mass expiry" in first.stderr, "a WARNING containing 'mass expiry'", failures)
    check(reaped <= 100, f"one sweep reaped {reaped} of 1000 (<= mass_reap_per_sweep 100)", failures)
    forced = daemons.run_once("--force")
    check(forced.returncode == 0, f"--force run exit code {forced.returncode}", failures)
    check(set(answered(auth)) == dead, f"--force reaped the rest: {len(answered(auth))} of 1000", failures)
    return failures


SCENARIOS = {"outage": outage, "replicas": replicas, "mass-expiry": mass_expiry}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the auth-service answers 503")
    args = parser.parse_args()
    logdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"reaper-bench-{os.getpid()}"
    logdir.mkdir(parents=True, exist_ok=True)
    print(f"{args.scenario}: daemon logs in {logdir}")
    with RedisProcess() as redis_server, StandIn() as auth:
        daemons = Daemons(redis_server.url, auth.url, logdir)
        try:
            failures = SCENARIOS[args.scenario](args, redis_server, auth, daemons)
        finally:
            codes = daemons.stop_all()
        print(f"  daemons' exit codes: {codes}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
