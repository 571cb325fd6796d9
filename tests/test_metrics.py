"""Prometheus metrics (reaper/ops/metrics.py): what a report and the counters become, read back with
prometheus_client's own parser; and the clock lead a real sweep measures."""

import math
from collections import Counter

import pytest
from prometheus_client import REGISTRY, generate_latest

from reaper.core.counters import Counters
from reaper.ops.metrics import Metrics
from reaper.sweep.sweep import SweepReport
from support.metrics import metrics_of, samples, value


def test_before_any_sweep_every_family_is_there_and_counters_are_zero():
    scraped = samples(metrics_of(Counters(), leads=False))
    for reason in ("heartbeat_timeout", "ping_timeout", "orphan", "malformed", "startup_purge"):
        assert value(scraped, "reaper_reaped_total", reason=reason) == 0
    for target in ("auth_service", "mongo", "redis", "signaling", "user_service"):
        assert value(scraped, "reaper_cascade_failures_total", target=target) == 0
    for target in ("auth_service", "mongo", "signaling", "user_service"):
        assert value(scraped, "reaper_circuit_opened_total", target=target) == 0
        assert value(scraped, "reaper_circuit_refused_total", target=target) == 0
    for target in ("auth_service", "mongo", "user_service"):
        assert value(scraped, "reaper_retention_failures_total", target=target) == 0
    for job in ("sweep", "cascade", "cleanup"):
        for family in ("reaper_job_failures_total", "reaper_job_missed_runs_total",
                       "reaper_job_overlapped_runs_total", "reaper_redis_unreachable_total"):
            assert value(scraped, family, job_name=job) == 0
    assert value(scraped, "reaper_skipped_live_total") == 0
    assert value(scraped, "reaper_kept_attached_total") == 0
    assert value(scraped, "reaper_sweep_duration_seconds_count") == 0
    assert value(scraped, "reaper_leader") == 0 and value(scraped, "reaper_paused") == 0
    assert value(scraped, "reaper_redis_reachable") == 0  # not known to answer before the startup step
    assert math.isnan(value(scraped, "reaper_writer_clock_skew_max_seconds"))
    assert not any(name == "reaper_guests" for name, _ in scraped)  # no sweep, no guests to tell


def test_a_sweep_report_becomes_gauges_and_a_histogram_sample():
    metrics = metrics_of(Counters(), paused=True)
    report = SweepReport(now=1_800_000_000.0, total=10, responsive=7, malformed=2, orphans=3,
                         duration_s=0.75, mass_expiry=True)
    for age in (1.0, 2.0, -0.5):
        report.skew.add(age)
    metrics.record_sweep(report)
    metrics.record_tier(pending=4, dead=1)
    scraped = samples(metrics)

    assert {state: value(scraped, "reaper_guests", state=state)
            for state in ("responsive", "unresponsive", "malformed", "orphan")} == \
        {"responsive": 7, "unresponsive": 3, "malformed": 2, "orphan": 3}
    assert value(scraped, "reaper_sweep_duration_seconds_count") == 1
    assert value(scraped, "reaper_sweep_duration_seconds_sum") == 0.75
    assert value(scraped, "reaper_sweep_duration_seconds_bucket", le="1.0") == 1
    assert value(scraped, "reaper_sweep_duration_seconds_bucket", le="0.5") == 0
    assert value(scraped, "reaper_last_sweep_success_timestamp_seconds") == 1_800_000_000.75
    assert value(scraped, "reaper_mass_expiry") == 1
    assert value(scraped, "reaper_cascades_pending") == 4 and value(scraped, "reaper_cascades_dead") == 1
    assert value(scraped, "reaper_writer_clock_skew_max_seconds") == 0.5
    assert value(scraped, "reaper_writer_clock_skew_p95_seconds") == 0.5
    assert value(scraped, "reaper_leader") == 1 and value(scraped, "reaper_paused") == 1

    metrics.record_tier(pending=0, dead=1, mass_expiry=False)  # a standby reads the leader's verdict
    assert value(samples(metrics), "reaper_mass_expiry") == 0


def test_counters_are_read_at_scrape_time_and_steps_add_up_by_target():
    counters = Counters()
    metrics = metrics_of(counters)
    counters.add("reaped.orphan", 3)
    counters.add("stale_seen.ping_timeout", 2)
    counters.add("orphans_seen", 5)
    counters.add("malformed", 1)
    counters.add("skipped_live", 4)
    counters.add("step_failed.auth", 1)
    counters.add("step_failed.auth_all", 2)
    counters.add("step_failed.mongo_all", 1)
    counters.add("dead_letters", 2)
    counters.add("job_failed.cleanup")
    counters.add("kept_attached", 6)
    counters.add("step_failed.tell", 2)
    counters.add("circuit_opened.auth-service")
    counters.add("circuit_opened.signaling", 3)
    scraped = samples(metrics)

    assert value(scraped, "reaper_reaped_total", reason="orphan") == 3
    assert value(scraped, "reaper_reaped_total", reason="heartbeat_timeout") == 0
    assert value(scraped, "reaper_stale_seen_total", reason="ping_timeout") == 2
    assert value(scraped, "reaper_orphans_seen_total") == 5
    assert value(scraped, "reaper_malformed_total") == 1
    assert value(scraped, "reaper_skipped_live_total") == 4
    assert value(scraped, "reaper_cascade_failures_total", target="auth_service") == 3
    assert value(scraped, "reaper_cascade_failures_total", target="mongo") == 1
    assert value(scraped, "reaper_dead_letters_total") == 2
    assert value(scraped, "reaper_job_failures_total", job_name="cleanup") == 1
    assert value(scraped, "reaper_kept_attached_total") == 6
    assert value(scraped, "reaper_cascade_failures_total", target="signaling") == 2
    assert value(scraped, "reaper_circuit_opened_total", target="auth_service") == 1
    assert value(scraped, "reaper_circuit_opened_total", target="signaling") == 3
    assert value(scraped, "reaper_circuit_opened_total", target="user_service") == 0
    counters.add("reaped.orphan")
    assert value(samples(metrics), "reaper_reaped_total", reason="orphan") == 4


def test_the_counters_of_held_up_jobs_refused_calls_and_failed_retention_are_exposed():
    counters = Counters()
    metrics = metrics_of(counters)
    counters.add("job_missed.sweep", 3)
    counters.add("job_overlapped.cascade", 2)
    counters.add("redis_unreachable.cleanup")
    counters.add("redis_refused.sweep", 4)
    counters.add("wrong_key_type.cascade")
    counters.add("circuit_refused.user-service", 7)
    counters.add("retention_failed.auth-service")
    counters.add("retention_failed.mongo", 2)
    scraped = samples(metrics)

    assert value(scraped, "reaper_job_missed_runs_total", job_name="sweep") == 3
    assert value(scraped, "reaper_job_overlapped_runs_total", job_name="cascade") == 2
    assert value(scraped, "reaper_job_overlapped_runs_total", job_name="sweep") == 0
    assert value(scraped, "reaper_redis_unreachable_total", job_name="cleanup") == 1
    assert value(scraped, "reaper_redis_refused_total", job_name="sweep") == 4
    assert value(scraped, "reaper_wrong_key_type_total", job_name="cascade") == 1
    assert value(scraped, "reaper_wrong_key_type_total", job_name="sweep") == 0
    assert value(scraped, "reaper_circuit_refused_total", target="user_service") == 7
    assert value(scraped, "reaper_retention_failures_total", target="auth_service") == 1
    assert value(scraped, "reaper_retention_failures_total", target="mongo") == 2
    assert value(scraped, "reaper_retention_failures_total", target="user_service") == 0


def test_each_reaper_has_a_registry_of_its_own():
    first, second = metrics_of(Counters()), metrics_of(Counters())  # no "duplicated timeseries"
    first.record_sweep(SweepReport(total=1, responsive=1))
    assert value(samples(first), "reaper_guests", state="responsive") == 1
    assert not any(k[0] == "reaper_guests" for k in samples(second))
    assert b"reaper_" not in generate_latest(REGISTRY)


# -- the clock lead, from a real sweep -----------------------------------------------------------

def test_a_sweep_measures_the_writers_lead_over_fresh_records_only(r, world, ctx_factory):
    world.guest(1, age=-2.0)  # a writer 2 s ahead of Redis
    world.guest(2, age=-0.5)
    for n in range(3, 23):
        world.guest(n, age=10.0)
    world.guest(99, age=400)  # stale: its "lead" of -400 s is an age, not a clock
    ctx = ctx_factory(safety__dry_run=True)
    report = ctx.sweep()
    elapsed = report.now - world.now  # Redis time that passed since the records were written

    assert report.skew.count == 22
    assert report.skew.max_lead() == pytest.approx(2.0 - elapsed, abs=0.002)
    # 2 of 22 ahead (9 %): p95 is the second writer's lead, rounded up to a 10 ms bin edge
    assert 0.5 - elapsed - 0.002 <= report.skew.lead_quantile(0.95) <= 0.5 - elapsed + 0.012
    assert report.stale == Counter(heartbeat_timeout=1)


def test_the_served_registry_adds_the_runtime_collectors_to_reapers_own():
    metrics = metrics_of(Counters())
    own = {m.name for m in metrics.registry.collect()}
    served = {m.name for m in metrics.served.collect()}

    assert {"reaper_build", "reaper_circuit_open", "reaper_reaped"} <= own
    assert not any(name.startswith(("process_", "python_")) for name in own)
    assert served - own >= {"process_resident_memory_bytes", "process_start_time_seconds", "python_info",
                            "python_gc_collections"}


class FakeCircuit:
    def __init__(self, name: str, closed: bool):
        self.name, self.closed = name, closed


def test_a_circuit_not_closed_reads_1_by_its_target_label():
    circuits = [FakeCircuit("auth-service", False), FakeCircuit("user-service", True),
                FakeCircuit("mongo", True), FakeCircuit("signaling", False)]
    metrics = Metrics(Counters().snapshot, lambda: True, lambda: False, lambda: circuits)

    scraped = samples(metrics)

    assert {t: value(scraped, "reaper_circuit_open", target=t)
            for t in ("auth_service", "user_service", "mongo", "signaling")} == \
        {"auth_service": 1, "user_service": 0, "mongo": 0, "signaling": 1}

