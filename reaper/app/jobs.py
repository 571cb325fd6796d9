"""The scheduled jobs: one thread per job on reaper's monotonic clock, errors never swallowed,
and the gate every job passes first: not paused, and this replica leads.

Each job runs on a grid of its own (start + k x interval) of ``time.monotonic``, so a step of
the host's wall clock (NTP, `date -s`, a VM restored from a snapshot) neither delays nor bunches
a run (docs/design.md, the cascade: scheduling runs on a monotonic clock). APScheduler 3, used before, computes run
times from the wall clock: stepped back 300 s, it ran no job for 300 s. A job never runs twice
at once; runs missed while it ran, or while the process was held up, collapse into one.
"""

import math
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from reaper import logs
from reaper.core.counters import Counters
from reaper.core.errors import RedisRefused
from reaper.core.turns import PAUSED, STANDBY
from reaper.store.client import explain

# A failure that repeats the one before carries no traceback, but once an hour: the first one's may
# have been rotated out of the journal by then.
TRACEBACK_EVERY_S = 3600.0


@dataclass(frozen=True)
class Slot:
    """Where a job stands on its grid at ``now``: the grid point to run at, and how many passed."""

    due: float
    passed: int


def catch_up(due: float, interval_s: float, now: float) -> Slot:
    """The last grid point (due + k x interval, k >= 0) not after ``now``: a job woken late runs
    once for all the points it slept through. Pure."""
    passed = max(0, math.floor((now - due) / interval_s))
    return Slot(due + passed * interval_s, passed)


def next_slot(ran_at: float, interval_s: float, now: float) -> Slot:
    """After the run of grid point ``ran_at`` ends at ``now``: the first later point after
    ``now``, and how many points the run overlapped (skipped, as one instance at most runs). Pure."""
    over = catch_up(ran_at, interval_s, now)
    return Slot(over.due + interval_s, over.passed)


class Job:
    """One job's thread: waits for its grid point on the monotonic clock, runs, and says what
    went wrong in our words (counted: job_failed / job_missed / job_overlapped.<id>). A failure
    is one ERROR record, its traceback attached; the same failure again, run after run, is one
    line each, the traceback left out (TRACEBACK_EVERY_S)."""

    def __init__(self, job_id: str, func: Callable[[], None], interval_s: float, at_once: bool,
                 counters: Counters, stop: threading.Event, clock: Callable[[], float]):
        self.id, self.func, self.interval_s, self.at_once = job_id, func, interval_s, at_once
        self.counters, self.stop, self.clock = counters, stop, clock
        self.thread = threading.Thread(target=self.loop, name=f"reaper-job-{job_id}", daemon=True)
        self._streak: Streak | None = None  # the failure of the last runs, while it repeats

    def loop(self) -> None:
        due = self.clock() + (0.0 if self.at_once else self.interval_s)
        while self._wait_until(due):
            slot = catch_up(due, self.interval_s, self.clock())
            if slot.passed:
                self._missed(slot.passed)
            self._run()
            after = next_slot(slot.due, self.interval_s, self.clock())
            if after.passed:
                self._overlapped(after.passed)
            due = after.due

    def _wait_until(self, due: float) -> bool:
        """False once the scheduler stops; else True at ``due`` (the wait re-checks the clock:
        an early wake-up never runs a job before its time)."""
        while (left := due - self.clock()) > 0:
            if self.stop.wait(left):
                return False
        return not self.stop.is_set()

    def _run(self) -> None:
        try:
            self.func()
        except Exception as exc:  # noqa: BLE001 - a job's failure is counted and said, the job goes on
            self.counters.add(f"job_failed.{self.id}")
            self._failed(exc)
        else:
            self._streak = None

    def _failed(self, exc: Exception) -> None:
        said, now, seen = logger.bind(job=self.id), self.clock(), fingerprint(exc)
        meaning = explain(exc) or exc  # a Redis error reaper knows is said in reaper's words
        if self._streak is None or self._streak.seen != seen:
            self._streak = Streak(seen)
        streak = self._streak
        streak.runs += 1
        if streak.traced_at is not None and now - streak.traced_at < TRACEBACK_EVERY_S:
            said.bind(error=logs.error_fields(exc), repeats=streak.runs).error(
                "Job {} failed: {}: {} (the same failure {} runs in a row; its traceback is with the first)",
                self.id, type(meaning).__name__, meaning, streak.runs)
            return
        streak.traced_at = now
        said.opt(exception=exc).error("Job {} failed: {}: {}", self.id, type(meaning).__name__, meaning)

    def _missed(self, runs: int) -> None:
        self.counters.add(f"job_missed.{self.id}", runs)
        logger.bind(job=self.id, runs=runs).warning(
            "Job {} missed {} run(s): the process was held up (frozen, or starved of CPU); running once "
            "now", self.id, runs)

    def _overlapped(self, runs: int) -> None:
        self.counters.add(f"job_overlapped.{self.id}", runs)
        logger.bind(job=self.id, runs=runs).warning(
            "Job {} ran longer than its interval ({:g}s); {} run(s) skipped", self.id, self.interval_s, runs)


@dataclass
class Streak:
    """The same failure, run after run: how many runs, and when its traceback was last logged."""

    seen: tuple  # fingerprint()
    runs: int = 0
    traced_at: float | None = None


def fingerprint(exc: BaseException) -> tuple:
    """What makes two failures the same: type, message, and where it was raised from. Pure."""
    frames = tuple((frame.f_code.co_filename, line) for frame, line in traceback.walk_tb(exc.__traceback__))
    return type(exc), str(exc), frames


class Scheduler:
    """The jobs' threads: ``start``, then ``shutdown`` lets the runs in hand finish."""

    def __init__(self, jobs: list[Job], stop: threading.Event):
        self.jobs, self.stop = jobs, stop

    def start(self) -> None:
        for job in self.jobs:
            job.thread.start()

    def shutdown(self, wait: bool = True) -> None:
        self.stop.set()
        if wait:
            for job in self.jobs:
                if job.thread.is_alive():
                    job.thread.join()


def build_scheduler(counters: Counters, jobs: dict, intervals: dict, start_now: set,
                    clock: Callable[[], float] = time.monotonic) -> Scheduler:
    """One job per id in ``jobs``; those in ``start_now`` run at once, the others after one
    interval. ``clock`` is monotonic; only tests pass another."""
    stop = threading.Event()
    return Scheduler([Job(job_id, func, intervals[job_id], job_id in start_now, counters, stop, clock)
                      for job_id, func in jobs.items()], stop)


class Gate:
    """Before each job: is reaper paused? Then: does this replica lead? Only a leader that is
    not paused works; the pause is asked first, so a paused replica does nothing at all."""

    def __init__(self, pause_watch, leadership):
        self.pause_watch, self.leadership = pause_watch, leadership

    def allows(self, job_id: str) -> bool:
        return self.refusal(job_id) is None

    def refusal(self, job_id: str) -> str | None:
        """None when this replica may work now; else why not: PAUSED or STANDBY."""
        if self.pause_watch.paused():
            return PAUSED
        if not self.leadership.confirm():
            self._refused()
            holder = self.leadership.holder
            logger.bind(job=job_id, leader=holder.name if holder else None).debug(
                "Job {}: skipped; {} leads, not this replica", job_id, holder.name if holder else "no replica")
            return STANDBY
        return None

    def _refused(self) -> None:
        """A lease Redis refused to write (a read-only replica, OOM) is no reason to stand by:
        raised, so the job's outage guard says that Redis refuses writes."""
        failure = self.leadership.failure
        known = explain(failure) if failure is not None else None
        if isinstance(known, RedisRefused):
            raise known from failure

    def guard(self, job_id: str, job, idle=None):
        """``job()`` when allowed; else ``idle(why)``, when given."""
        def run() -> None:
            why = self.refusal(job_id)
            if why is None:
                job()
            elif idle is not None:
                idle(why)

        return run
