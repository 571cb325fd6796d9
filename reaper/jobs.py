"""The APScheduler wiring: three interval jobs on one scheduler, errors never swallowed, and
the gate every job passes first: not paused, and this replica leads."""

from datetime import datetime, timedelta, timezone

from loguru import logger

from .counters import Counters
from .errors import RedisRefused
from .store import explain

SWEEP, CLEANUP, CASCADE = "sweep", "cleanup", "cascade"
PAUSED, STANDBY = "paused", "standby"  # why the gate refused a job


def build_scheduler(counters: Counters, jobs: dict, intervals: dict, start_now: set):
    """One job per id in ``jobs``; those in ``start_now`` run at once, the others after one
    interval. A job never runs twice at once; missed runs collapse into one."""
    # Imported here: `run --once` needs no scheduler, and apscheduler (tzlocal, zoneinfo) is
    # ~20 ms of its start-up.
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(len(jobs))},
                                    timezone=timezone.utc)
    now = datetime.now(timezone.utc)
    for job_id, func in jobs.items():
        interval = intervals[job_id]
        scheduler.add_job(
            func, "interval", seconds=interval, id=job_id, name=job_id,
            coalesce=True, max_instances=1, misfire_grace_time=max(1, int(interval)),
            next_run_time=now if job_id in start_now else now + timedelta(seconds=interval),
        )
    scheduler.add_listener(_surface(counters), EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    return scheduler


def _surface(counters: Counters):
    """APScheduler only logs a failed job; count it and log it in our words too."""
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED

    def listener(event) -> None:  # an apscheduler.events.JobExecutionEvent
        if event.code == EVENT_JOB_ERROR:
            counters.add(f"job_failed.{event.job_id}")
            logger.error("Job {} failed: {}: {}", event.job_id, type(event.exception).__name__,
                         event.exception)
        elif event.code == EVENT_JOB_MISSED:
            counters.add(f"job_missed.{event.job_id}")
            logger.warning("Job {} missed its run time (the previous run took too long)", event.job_id)
        else:
            counters.add(f"job_overlapped.{event.job_id}")
            logger.warning("Job {} is still running; this run is skipped", event.job_id)

    return listener


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
            logger.debug("Job {}: skipped; {} leads, not this replica", job_id,
                         holder.name if holder else "no replica")
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
