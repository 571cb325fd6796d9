"""Start-up of `reaper run --once` (issue #4): what a disabled target does not cost. pymongo and
an httpx client (httpcore, the CA bundle) are ~0.15 s of a run that needs neither when MongoDB
and the services are disabled."""

import os
import subprocess
import sys

import pytest

from reaper.app.cli import GC_YOUNG_THRESHOLD
from reaper.core.config import MongoConfig, ServiceConfig
from reaper.core.errors import PermanentError
from reaper.cascade.services import AuthService, GuestStore, UserService

HEAVY = ("pymongo", "httpcore")
# Prints which of HEAVY the process loaded, once `reaper run --once` has exited.
PROBE = ("import atexit, sys\n"
         f"atexit.register(lambda: print('LOADED', [m for m in {HEAVY!r} if m in sys.modules]))\n"
         "from reaper.app.cli import main\n"
         "main()\n")


@pytest.mark.parametrize("auth, loaded", [(False, []), (True, ["httpcore"])], ids=["disabled", "auth"])
def test_run_once_loads_only_what_its_targets_need(cli_env, r, world, tmp_path, auth, loaded):
    world.guest(1, age=600)
    env = {**os.environ, **cli_env, "REAPER_USER_SERVICE_BASE_URL": "", "REAPER_MONGO_URI": ""}
    if not auth:
        env["REAPER_AUTH_SERVICE_BASE_URL"] = ""

    run = subprocess.run([sys.executable, "-c", PROBE, "run", "--once"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)

    assert run.returncode == 0, run.stderr[-2000:]
    assert f"LOADED {loaded!r}" in run.stdout
    assert "Reaped guest_1" in run.stderr
    assert world.records() == set()


def test_a_run_collects_garbage_less_often_than_cpython_by_default(cli_env, r, world, tmp_path):
    """The young generation's threshold is raised before anything runs (app/cli.py says why)."""
    world.guest(1, age=600)
    probe = ("import atexit, gc\n"
             "atexit.register(lambda: print('THRESHOLD', gc.get_threshold()[0]))\n"
             "from reaper.app.cli import main\n"
             "main()\n")
    env = {**os.environ, **cli_env, "REAPER_AUTH_SERVICE_BASE_URL": "", "REAPER_USER_SERVICE_BASE_URL": "",
           "REAPER_MONGO_URI": ""}
    run = subprocess.run([sys.executable, "-c", probe, "run", "--once"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)

    assert run.returncode == 0, run.stderr[-2000:]
    assert f"THRESHOLD {GC_YOUNG_THRESHOLD}" in run.stdout
    assert GC_YOUNG_THRESHOLD > 700  # CPython's own
    assert world.records() == set()


def test_a_disabled_service_has_no_client_and_refuses_requests():
    for service in (AuthService(ServiceConfig(base_url="")), UserService(ServiceConfig(base_url=""))):
        assert not service.enabled
        with pytest.raises(PermanentError, match="disabled"):
            service.request("DELETE", "/auth/guest/guest_1")
        service.close()  # nothing to close, and no error


def test_a_disabled_guest_store_has_no_client():
    store = GuestStore(MongoConfig(uri=""))
    assert not store.enabled
    store.close()
