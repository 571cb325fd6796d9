"""Scheduling on a monotonic clock (issue #16 item 5): a step of the host's wall clock neither
stops nor bunches the jobs, and /healthz stays 200 (docs/design.md, the cascade "Clock jumps")."""

import os
import re
import threading
import time
from datetime import datetime

import httpx
import pytest
import redis

from reaper.app import daemon
from reaper.core.counters import Counters
from reaper.app.jobs import Gate, Slot, build_scheduler, catch_up, next_slot
from reaper.core.turns import CASCADE, CLEANUP, SWEEP
from reaper.store.leader import elect
from reaper.ops.monitor import Monitor
from reaper.store.pause import PauseWatch
from support.clocks import ManualClock, WallClock
from support.metrics import metrics_of, samples, value
from support.redis_proc import find_free_port
from support.standin import wait_for


# -- the grid, pure ------------------------------------------------------------------------------

@pytest.mark.parametrize("due, interval, now, slot", [
    (100.0, 10.0, 100.0, Slot(100.0, 0)),  # on time
    (100.0, 10.0, 109.9, Slot(100.0, 0)),  # a little late: still this point's run
    (100.0, 10.0, 110.0, Slot(110.0, 1)),  # woken one interval late: one run missed
    (100.0, 10.0, 135.0, Slot(130.0, 3)),  # frozen for 35 s: three missed, one run for them all
    (100.0, 10.0, 99.0, Slot(100.0, 0)),  # never before the point
])
def test_a_job_woken_late_runs_once_for_the_points_it_slept_through(due, interval, now, slot):
    assert catch_up(due, interval, now) == slot


@pytest.mark.parametrize("ran_at, interval, now, slot", [
    (100.0, 10.0, 100.5, Slot(110.0, 0)),  # a short run: the next point
    (100.0, 10.0, 109.99, Slot(110.0, 0)),
    (100.0, 10.0, 110.0, Slot(120.0, 1)),  # ran a whole interval: that point's run is skipped
    (100.0, 10.0, 125.0, Slot(130.0, 2)),  # two skipped, back on the grid
])
def test_the_next_run_is_the_next_point_after_the_run(ran_at, interval, now, slot):
    assert next_slot(ran_at, interval, now) == slot


# -- the scheduler, with the monotonic clock -----------------------------------------------------

class Runs:
    """A job that notes each run's monotonic time; ``hold`` keeps a run going until released."""

    def __init__(self):
        self.at: list[float] = []
        self.running, self.most_at_once = 0, 0
        self.hold = threading.Event()
        self.hold.set()
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.at.append(time.monotonic())
        self.hold.wait()
        with self._lock:
            self.running -= 1

    def __len__(self) -> int:
        return len(self.at)


@pytest.fixture
def scheduled():
    """scheduled(jobs, intervals, start_now): a started scheduler, shut down afterwards."""
    started = []

    def start(jobs: dict, intervals: dict, start_now: set, counters: Counters | None = None, **clock):
        scheduler = build_scheduler(counters or Counters(), jobs, intervals, start_now, **clock)
        scheduler.start()
        started.append(scheduler)
        return scheduler

    yield start
    for scheduler in started:
        scheduler.shutdown(wait=True)


def test_a_job_to_start_now_runs_before_one_that_waits_its_interval(scheduled):
    now_job, later_job = Runs(), Runs()
    begun = time.monotonic()

    scheduled({SWEEP: now_job, CLEANUP: later_job}, {SWEEP: 0.05, CLEANUP: 0.5}, {SWEEP})

    assert wait_for(lambda: len(later_job) >= 1, timeout=30)
    assert now_job.at[0] < later_job.at[0]
    assert later_job.at[0] - begun >= 0.5  # a lower bound: the interval is waited out


def test_a_run_longer_than_its_interval_is_never_doubled_and_skips_are_counted(scheduled, logs):
    clock, counters = ManualClock(), Counters()
    runs = Runs()

    def long_first_run():
        if not len(runs):
            clock.advance(6.5 * 0.05)  # the first run lasts six and a half intervals
        runs()

    scheduled({CASCADE: long_first_run}, {CASCADE: 0.05}, {CASCADE}, counters, clock=clock)
    assert wait_for(lambda: len(runs) == 1, timeout=30)
    clock.advance(0.05)  # the run after the skipped ones is due

    assert wait_for(lambda: len(runs) >= 2, timeout=30)
    assert runs.most_at_once == 1
    assert counters.get("job_overlapped.cascade") == 6  # the grid points 0.05 .. 0.30 went by
    assert value(samples(metrics_of(counters)), "reaper_job_overlapped_runs_total", job_name="cascade") == 6
    assert logs.at("WARNING", "Job cascade ran longer than its interval (0.05s); 6 run(s) skipped")


def test_a_job_held_up_past_its_next_runs_runs_once_for_them_and_counts_the_missed(scheduled, logs):
    clock, counters, runs = ManualClock(), Counters(), Runs()
    scheduled({CLEANUP: runs}, {CLEANUP: 0.05}, {CLEANUP}, counters, clock=clock)
    assert wait_for(lambda: len(runs) == 1, timeout=30)
    reads = clock.reads
    assert wait_for(lambda: clock.reads >= reads + 3, timeout=30)  # it waits for its next point

    clock.advance(3.5 * 0.05)  # held up (frozen, starved) across three points of its grid

    assert wait_for(lambda: len(runs) == 2, timeout=30)
    assert counters.get("job_missed.cleanup") == 2  # two points slept through; one run for all three
    assert value(samples(metrics_of(counters)), "reaper_job_missed_runs_total", job_name="cleanup") == 2
    assert logs.at("WARNING", "Job cleanup missed 2 run(s)")
    assert counters.get("job_overlapped.cleanup") == 0


def test_shutdown_lets_the_run_in_hand_finish(scheduled):
    order = []
    runs = Runs()
    runs.hold.clear()

    def job():
        runs()
        order.append("run finished")

    scheduler = scheduled({SWEEP: job}, {SWEEP: 0.05}, {SWEEP})
    assert wait_for(lambda: runs.running == 1, timeout=30)

    stopper = threading.Thread(target=lambda: (scheduler.shutdown(wait=True), order.append("shutdown returned")))
    stopper.start()
    assert wait_for(scheduler.stop.is_set, timeout=30)  # shutdown has begun, the run is still held
    runs.hold.set()
    stopper.join()

    assert order == ["run finished", "shutdown returned"] and runs.running == 0 and len(runs) == 1


def test_a_failing_job_is_logged_with_its_traceback_counted_and_run_again(scheduled, logs):
    counters = Counters()

    def boom():
        raise RuntimeError("broken on purpose")

    scheduled({CLEANUP: boom}, {CLEANUP: 0.02}, {CLEANUP}, counters)

    assert wait_for(lambda: counters.get("job_failed.cleanup") >= 3, timeout=30)
    assert logs.at("ERROR", "Job cleanup failed: RuntimeError: broken on purpose")


def test_a_redis_error_reaper_knows_is_said_in_reaper_s_words(scheduled, logs):
    counters = Counters()

    def full():  # what XADD answers once reaper's audit trail has used its last entry id
        raise redis.ResponseError("The stream has exhausted the last possible ID, unable to add more items "
                                  "script: 3a887f8fed480356ab51c16c07c3db3f17a66dd8, on @user_script:14.")

    scheduled({CLEANUP: full}, {CLEANUP: 0.02}, {CLEANUP}, counters)

    assert wait_for(lambda: counters.get("job_failed.cleanup") >= 2, timeout=30)
    assert logs.at("ERROR", "Job cleanup failed: AuditTrailFull: redis: reaper's audit trail stream")
    assert logs.at("ERROR", "runs in a row")  # said again without its traceback, in the same words


# -- the wall clock steps: the jobs go on ----------------------------------------------------------

@pytest.fixture
def wall(monkeypatch):
    clock = WallClock(monkeypatch)
    yield clock
    clock.close()


def test_the_wall_clock_shim_moves_the_wall_clock_and_not_the_monotonic_one(wall):
    import datetime as dt

    before_wall, before_mono, before_dt = time.time(), time.monotonic(), dt.datetime.now(dt.timezone.utc)
    wall.step(-300)

    assert time.time() - before_wall < -299
    assert (dt.datetime.now(dt.timezone.utc) - before_dt).total_seconds() < -299
    assert time.monotonic() >= before_mono  # not stepped back with the wall clock


@pytest.mark.parametrize("step_s", [-300, 300, -86_400], ids=["back-300s", "forward-300s", "back-a-day"])
def test_jobs_keep_their_cadence_when_the_wall_clock_steps(scheduled, wall, step_s):
    sweeps, cascades, counters = Runs(), Runs(), Counters()
    scheduled({SWEEP: sweeps, CASCADE: cascades}, {SWEEP: 0.1, CASCADE: 0.05}, {SWEEP}, counters)
    assert wait_for(lambda: len(sweeps) >= 3 and len(cascades) >= 3, timeout=30)
    seen = len(sweeps), len(cascades)

    wall.step(step_s)

    assert wait_for(lambda: len(sweeps) >= seen[0] + 10 and len(cascades) >= seen[1] + 10, timeout=60), \
        f"after the step: {len(sweeps) - seen[0]} sweeps, {len(cascades) - seen[1]} cascade runs"
    assert counters.get("job_failed.sweep") == 0


def test_a_step_of_the_wall_clock_does_not_bunch_runs(scheduled, wall):
    """Forward 300 s: no burst of the runs the wall clock says were missed."""
    runs, counters = Runs(), Counters()
    scheduled({SWEEP: runs}, {SWEEP: 0.2}, {SWEEP}, counters)
    assert wait_for(lambda: len(runs) >= 2, timeout=30)
    stepped_at = time.monotonic()

    wall.step(300)

    assert wait_for(lambda: len([t for t in runs.at if t > stepped_at]) >= 3, timeout=60)
    after = [t for t in runs.at if t > stepped_at]
    # One run per point of the monotonic grid at most: however loaded the machine, never more runs
    # than intervals passed (plus the one in progress at the step).
    assert len(after) <= (after[-1] - stepped_at) / 0.2 + 2, after


@pytest.mark.parametrize("step_s", [-300, 300, -86_400], ids=["back-300s", "forward-300s", "back-a-day"])
def test_healthz_ages_the_last_turn_on_the_monotonic_clock_only(make_config, wall, step_s):
    mono = ManualClock(5000.0)
    monitor = Monitor(make_config(timing__heartbeat_interval="30s"), clock=mono)  # late after 90 s
    monitor.ready()
    monitor.health.turned("swept")

    wall.step(step_s)
    mono.advance(89)

    assert monitor.health.healthz().status == 200
    assert monitor.health.healthz().body["last_turn_age_s"] == 89
    mono.advance(2)
    assert monitor.health.healthz().status == 503  # the monotonic clock, not the wall, says late
    monitor.close()


@pytest.mark.parametrize("step_s", [-300, 300], ids=["back-300s", "forward-300s"])
def test_sweeps_go_on_and_healthz_stays_200_when_the_wall_clock_steps(ctx_factory, world, wall, step_s):
    """The daemon's own jobs (gate, sweep, monitor) on a real Redis: the sweep turns go on after
    the step, and /healthz answers 200 right after each."""
    ctx = ctx_factory(timing__heartbeat_interval="300ms", timing__cascade_interval="100ms")
    leadership = elect(ctx.client, ctx.keys.leader, 10, False)
    gate = Gate(PauseWatch(ctx.client, ctx.keys), leadership)
    assert leadership.tick()
    monitor = Monitor(ctx.config).attach(ctx, gate)
    monitor.ready()
    turns, answers = [], []

    jobs = daemon.jobs(ctx, False, gate, monitor)
    sweep_turn = jobs[SWEEP]

    def turn_and_ask():
        sweep_turn()
        turns.append(time.monotonic())
        answers.append(monitor.health.healthz().status)

    scheduler = build_scheduler(ctx.counters, {**jobs, SWEEP: turn_and_ask},
                                {SWEEP: 0.3, CASCADE: 0.1, CLEANUP: 60}, {SWEEP, CASCADE})
    scheduler.start()
    try:
        assert wait_for(lambda: len(turns) >= 2, timeout=30)
        seen = len(turns)
        world.guest(1, age=600)  # a dead guest, to be reaped after the step

        wall.step(step_s)

        assert wait_for(lambda: len(turns) >= seen + 5, timeout=60), f"{len(turns) - seen} turns after the step"
        assert "guest_1" not in world.online()
        assert monitor.health.healthz().status == 200
        assert set(answers) == {200}
    finally:
        scheduler.shutdown(wait=True)
        leadership.stop()
        monitor.close()


# -- a real daemon whose host clock steps (libfaketime, when installed) ----------------------------

LIBFAKETIME = next((path for path in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                                      "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                                      "/usr/lib/faketime/libfaketime.so.1", "/usr/local/lib/faketime/libfaketime.so.1")
                    if os.path.exists(path)), None)
SWEPT = "Sweep: scanned="


def _log_times(text: str) -> list[datetime]:
    """The time of each line reaper wrote (its text format starts every line with it)."""
    return [datetime.fromisoformat(line.partition(" | ")[0])
            for line in text.splitlines() if LOG_TIME.match(line)]


LOG_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d \| ")


@pytest.mark.parametrize("step", ["-300", "+300"], ids=["back-300s", "forward-300s"])
def test_a_real_daemon_sweeps_on_and_stays_healthy_when_its_host_clock_steps(launch, tmp_path, world,
                                                                          auth_service, step):
    """libfaketime moves the daemon's wall clock (CLOCK_REALTIME) and leaves CLOCK_MONOTONIC
    alone; Redis and the test keep the real one."""
    assert LIBFAKETIME, "libfaketime is not installed: apt-get install -y libfaketime (scripts/setup does)"
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    port = find_free_port()
    reaper = launch("run", LD_PRELOAD=LIBFAKETIME, FAKETIME_TIMESTAMP_FILE=str(offset), FAKETIME_NO_CACHE="1",
                    DONT_FAKE_MONOTONIC="1", REAPER_SERVER_LISTEN=f"127.0.0.1:{port}",
                    REAPER_TIMING_HEARTBEAT_INTERVAL="500ms")
    try:
        assert reaper.wait_log(SWEPT, timeout=30), reaper.stderr()
        before = reaper.count(SWEPT)
        last_before = _log_times(reaper.stderr())[-1]
        stepped = tmp_path / "faketime.new"
        stepped.write_text(f"{step}\n")
        stepped.replace(offset)  # at once: the daemon reads the file on every clock call

        assert wait_for(lambda: reaper.count(SWEPT) >= before + 6, timeout=60), reaper.stderr()[-3000:]
        world.guest(1, age=600)  # dead: reaped by a sweep after the step
        assert auth_service.wait_for(lambda: auth_service.deleted_guests() == ["guest_1"], timeout=30), \
            reaper.stderr()[-3000:]
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["role"] == "leader", health.text
        # The shim did move the daemon's wall clock: its log lines say so.
        moved = (_log_times(reaper.stderr())[-1] - last_before).total_seconds()
        assert (moved < -250) if step.startswith("-") else (moved > 250), moved
        assert reaper.stop() == 0
    finally:
        if reaper.proc.poll() is None:
            reaper.kill()
