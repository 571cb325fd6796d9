"""`reaper run` raises its soft open-files limit (RLIMIT_NOFILE) to the hard one when it starts
(issue #12): systemd's soft default of 1024 is what a flood of connections ran out of. Where the
raise is refused, or the platform has no such limit, it says so at DEBUG and runs on."""

import resource

import pytest

from reaper.ops import limits
from support.limited import LimitedLauncher, open_files_limits


@pytest.fixture
def launch_limited(redis_env, auth_service, user_service, tmp_path):
    """launch_limited((soft, hard), *args, **env): a `reaper run` under those open-files limits."""
    launcher = LimitedLauncher(redis_env, auth_service.url, user_service.url, tmp_path)
    yield launcher.start_limited
    launcher.kill_all()


def test_reaper_run_raises_its_soft_open_files_limit_to_the_hard_one(launch_limited):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard > 300, "this test needs a hard limit above its soft one"
    daemon = launch_limited((256, hard), "run", REAPER_LOG_LEVEL="DEBUG")
    assert daemon.wait_log("Limits: open files raised from 256 to"), daemon.stderr()
    assert open_files_limits(daemon.proc.pid) == (str(hard), str(hard))
    assert daemon.wait_log("is now the leader"), daemon.stderr()
    assert daemon.stop() == 0


@pytest.mark.parametrize("soft", [64, 1000])
def test_reaper_run_raises_a_soft_limit_below_a_hard_one_it_was_given(launch_limited, soft):
    daemon = launch_limited((soft, 2048), "run", REAPER_LOG_LEVEL="DEBUG")
    assert daemon.wait_log(f"Limits: open files raised from {soft} to 2048"), daemon.stderr()
    assert open_files_limits(daemon.proc.pid) == ("2048", "2048")
    assert daemon.stop() == 0


def test_reaper_run_at_its_hard_limit_already_says_so_and_runs(launch_limited):
    daemon = launch_limited((300, 300), "run", REAPER_LOG_LEVEL="DEBUG")
    assert daemon.wait_log("Limits: open files 300 (the hard limit 300), nothing to raise"), daemon.stderr()
    assert daemon.wait_log("is now the leader"), daemon.stderr()
    assert open_files_limits(daemon.proc.pid) == ("300", "300")
    assert daemon.stop() == 0


def test_reaper_run_says_nothing_of_it_at_info(launch_limited):
    daemon = launch_limited((256, 2048), "run")
    assert daemon.wait_log("is now the leader"), daemon.stderr()
    assert open_files_limits(daemon.proc.pid) == ("2048", "2048")
    assert "Limits:" not in daemon.stderr()
    assert daemon.stop() == 0


@pytest.mark.parametrize(("soft", "hard", "wanted"), [
    (1024, 524288, 524288),
    (256, 1024, 1024),
    (1024, 1024, None),
    (4096, 1024, None),  # not possible, but never lowered
    (1024, -1, limits.UNLIMITED_STANDIN),  # -1: unlimited
    (-1, -1, None),
    (limits.UNLIMITED_STANDIN, -1, None),
    (limits.UNLIMITED_STANDIN * 2, -1, None),
])
def test_the_soft_limit_wanted(soft, hard, wanted):
    assert limits.wanted_soft(soft, hard, unlimited=-1) == wanted


@pytest.mark.parametrize("refusal", [ValueError("not allowed to raise the soft limit"),
                                     PermissionError(1, "Operation not permitted")])
def test_a_refused_raise_is_logged_and_harmless(monkeypatch, logs, refusal):
    def refuse(*_):
        raise refusal

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    monkeypatch.setattr(resource, "getrlimit", lambda _: (256, hard))
    monkeypatch.setattr(resource, "setrlimit", refuse)
    limits.raise_open_files()
    assert logs.at("DEBUG", "Limits: open files stays 256: raising it to") != []


def test_an_unlimited_hard_limit_is_asked_for_as_a_large_finite_one(monkeypatch, logs):
    asked = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, resource.RLIM_INFINITY))
    monkeypatch.setattr(resource, "setrlimit", lambda which, pair: asked.append((which, pair)))
    limits.raise_open_files()
    assert asked == [(resource.RLIMIT_NOFILE, (limits.UNLIMITED_STANDIN, resource.RLIM_INFINITY))]
    assert logs.at("DEBUG", "raised from 1024 to 1048576 (the hard limit unlimited)") != []


def test_no_resource_module_is_logged_and_harmless(monkeypatch, logs):
    monkeypatch.setattr(limits, "resource", None)
    limits.raise_open_files()
    assert logs.at("DEBUG", "no resource module") != []
