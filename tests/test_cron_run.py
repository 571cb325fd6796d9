"""What a `reaper run --once` leaves for Prometheus (reaper/ops/lastrun.py): the node-exporter textfile
and the Pushgateway push, on a clean run and a failing one; and --pending-ok's exit code."""

import os
import time

import pytest
from prometheus_client import generate_latest

from reaper.ops import lastrun
from reaper.core.counters import Counters
from reaper.ops.metrics import Metrics
from support.cli import invoke
from support.logs import Logs
from support.metrics import parsed, value
from support.pushgateway import PushGateway
from support.redis_proc import find_free_port

pytestmark = pytest.mark.usefixtures("isolated_cli")


@pytest.fixture
def env(cli_env):
    return cli_env


def read(path) -> dict:
    return parsed(path.read_text())


# -- the textfile ---------------------------------------------------------------------------------

def test_a_clean_run_replaces_the_textfile_whole_with_its_metrics(env, world, tmp_path):
    world.guest(1, age=400)
    prom = tmp_path / "textfile" / "reaper.prom"
    prom.parent.mkdir()
    prom.write_text("# the previous run's\n")
    before_inode, before = prom.stat().st_ino, time.time()

    result = invoke(["run", "--once", "--metrics-file", str(prom)], env)

    assert result.exit_code == 0, result.output
    assert os.listdir(prom.parent) == ["reaper.prom"]  # no temporary file left beside it
    assert prom.stat().st_ino != before_inode  # renamed over the old one, not rewritten in place
    scraped = read(prom)
    assert value(scraped, "reaper_last_run_exit_code") == 0
    assert before <= value(scraped, "reaper_last_run_timestamp_seconds") <= time.time()
    assert value(scraped, "reaper_last_run_duration_seconds") >= 0
    assert value(scraped, "reaper_reaped_total", reason="heartbeat_timeout") == 1
    assert value(scraped, "reaper_guests", state="unresponsive") == 1
    assert value(scraped, "reaper_sweep_duration_seconds_count") == 1
    assert value(scraped, "reaper_cascades_pending") == 0
    assert value(scraped, "reaper_redis_reachable") == 1
    assert value(scraped, "reaper_circuit_open", target="auth_service") == 0
    assert any(name == "reaper_build_info" for name, _ in scraped)
    # A process that has exited has no memory to report, and node-exporter has process_* of its own.
    assert not any(name.startswith(("process_", "python_")) for name, _ in scraped)


def test_a_run_that_cannot_reach_redis_still_writes_its_exit_code(env, tmp_path):
    prom = tmp_path / "reaper.prom"
    unreachable = f"redis://127.0.0.1:{find_free_port()}/0"

    result = invoke(["run", "--once", "--metrics-file", str(prom)], {**env, "REAPER_REDIS_URL": unreachable})

    assert result.exit_code == 3
    scraped = read(prom)
    assert value(scraped, "reaper_last_run_exit_code") == 3
    assert value(scraped, "reaper_redis_reachable") == 0
    assert value(scraped, "reaper_last_run_timestamp_seconds") > 0


@pytest.mark.parametrize("flags, code", [([], 1), (["--pending-ok"], 0)])
def test_cascades_left_to_retry_exit_1_unless_pending_ok(env, r, world, auth_service, tmp_path, flags, code):
    world.guest(1, age=400)
    auth_service.fail(503, path_prefix="/auth/guest/guest_")  # the retention call still works
    prom = tmp_path / "reaper.prom"

    result = invoke(["run", "--once", *flags, "--metrics-file", str(prom)], env)

    assert result.exit_code == code, result.output
    assert "1 cascades wait for a retry" in result.stderr  # said either way
    scraped = read(prom)
    assert value(scraped, "reaper_last_run_exit_code") == code
    assert value(scraped, "reaper_cascades_pending") == 1
    assert value(scraped, "reaper_cascade_failures_total", target="auth_service") == 1


def test_pending_ok_does_not_hide_a_failed_retention_call(env, world, auth_service):
    world.guest(1, age=400)
    auth_service.fail(503)  # the guest's delete and the retention call alike

    result = invoke(["run", "--once", "--pending-ok"], env)

    assert result.exit_code == 1, result.output
    assert auth_service.calls("DELETE", "/auth/guest/cleanup")


# -- the Pushgateway ------------------------------------------------------------------------------

def test_the_run_is_pushed_as_job_reaper_with_its_instance(env, world):
    world.guest(1, age=400)
    with PushGateway() as gateway:
        result = invoke(["run", "--once", "--pushgateway", gateway.url, "--push-instance", "cron-a"], env)

    assert result.exit_code == 0, result.output
    [push] = gateway.pushes
    assert (push.method, push.path) == ("PUT", "/metrics/job/reaper/instance/cron-a")
    assert push.content_type.startswith("text/plain")
    scraped = parsed(push.body.decode())
    assert value(scraped, "reaper_last_run_exit_code") == 0
    assert value(scraped, "reaper_reaped_total", reason="heartbeat_timeout") == 1


def test_the_instance_is_this_hosts_name_by_default_and_a_failed_run_is_pushed_too(env):
    unreachable = f"redis://127.0.0.1:{find_free_port()}/0"
    with PushGateway() as gateway:
        result = invoke(["run", "--once", "--pushgateway", gateway.url], {**env, "REAPER_REDIS_URL": unreachable})

    assert result.exit_code == 3
    [push] = gateway.pushes
    assert push.path == f"/metrics/job/reaper/instance/{lastrun.default_instance()}"
    assert value(parsed(push.body.decode()), "reaper_last_run_exit_code") == 3


def test_a_pushgateway_answering_500_is_a_warning_and_the_exit_code_stays(env, world, tmp_path):
    world.guest(1, age=400)
    prom = tmp_path / "reaper.prom"
    with PushGateway(status=500) as gateway:
        result = invoke(["run", "--once", "--pushgateway", gateway.url, "--metrics-file", str(prom)], env)

    assert result.exit_code == 0, result.output
    assert len(gateway.pushes) == 1
    assert f"Metrics: push to {gateway.url} failed" in result.stderr and "WARNING" in result.stderr
    assert value(read(prom), "reaper_last_run_exit_code") == 0  # the textfile is written all the same


def test_a_pushgateway_refusing_connections_is_a_warning_and_the_exit_code_stays(env, world, auth_service):
    world.guest(1, age=400)
    auth_service.fail(503, path_prefix="/auth/guest/guest_")
    refused = f"http://127.0.0.1:{find_free_port()}"

    result = invoke(["run", "--once", "--pushgateway", refused], env)

    assert result.exit_code == 1, result.output  # the run's own code: a cascade waits
    assert f"Metrics: push to {refused} failed: URLError" in result.stderr


# -- bad input: a usage error before anything is touched -------------------------------------------

@pytest.mark.parametrize("args, said", [
    (["--metrics-file", "{tmp}/missing/reaper.prom"], "does not exist"),
    (["--metrics-file", "{tmp}"], "is a directory"),
    (["--pushgateway", "ftp://gateway:9091"], "expected http or https"),
    (["--pushgateway", "http://gateway:port"], "Port could not be cast"),
    (["--pushgateway", "http://:9091"], "no host"),
])
def test_a_bad_outlet_is_a_usage_error_and_nothing_is_reaped(env, world, tmp_path, args, said):
    world.guest(1, age=400)
    args = [a.format(tmp=tmp_path) for a in args]

    result = invoke(["run", "--once", *args], env)

    assert result.exit_code == 2
    assert said in result.stderr
    assert world.records() == {"sock1"}


def test_the_cron_options_need_once(env, tmp_path):
    result = invoke(["run", "--metrics-file", str(tmp_path / "reaper.prom")], env)

    assert result.exit_code == 2
    assert "are for --once" in result.stderr


def test_a_textfile_that_cannot_be_written_at_the_end_is_a_warning(tmp_path):
    metrics = Metrics(Counters().snapshot, lambda: False, lambda: False)
    registry = lastrun.with_run(metrics, 0, 10.0, 12.5)
    gone = tmp_path / "removed-since" / "reaper.prom"
    logs = Logs()
    try:
        lastrun.leave(registry, lastrun.Outlets(metrics_file=str(gone)))
    finally:
        logs.close()

    assert logs.at("WARNING") == [f"Metrics: could not write {gone}: No such file or directory"]
    assert value(parsed(generate_latest(registry).decode()), "reaper_last_run_duration_seconds") == 2.5
