"""SIGTERM in the middle of a sweep and of a cascade batch (issue #3 item 8, docs/cli.md): exit 0,
"stopped cleanly", and nothing half-done. A record removed has its intent, a DELETE answered
has its intent settled, a claimed intent left over is due again within claim_timeout, and a
daemon started afterwards finishes every one of them."""

import ctypes
import os
import platform
import signal
import time

import pytest

from reaper.store import scripts
from support.guests import CONN, redis_now
from support.standin import wait_for
from support.intents import assert_intents_consistent
from support.daemons import Launcher
from support.door import HeldDoor, runs_script
from support.redis_proc import find_free_port
from test_faults import (AUTH_GUEST, FAST, CLAIM_TIMEOUT_S, DUE, INTENTS, all_settled, answered,
                         assert_only_the_dead_deleted, in_flight, pending_users, populate, report,
                         socket_of, untraced)

# One small batch at a time through a slow service: a batch in hand takes about 2 s.
SLOW_BATCHES = {"REAPER_CASCADE_CONCURRENCY": "2", "REAPER_CASCADE_BATCH_SIZE": "4"}
HANG_S = 1.0


@pytest.fixture
def launch(redis_server, auth_service, user_service, tmp_path):
    launcher = Launcher({"REAPER_REDIS_URL": redis_server.url}, auth_service.url, user_service.url,
                        tmp_path, FAST)
    yield launcher.start
    launcher.kill_all()


def assert_nothing_half_done(r, auth, cast) -> None:
    """Removed records have intents; answered DELETEs have settled intents; what is left is
    scheduled, due again at the latest when a claim would have run out."""
    assert untraced(r, auth, cast) == set()
    assert set(answered(auth)) & pending_users(r) == set(), "a DELETE answered, its intent not settled"
    assert_intents_consistent(r)
    latest_due = max((score for _, score in r.zrange(DUE, 0, -1, withscores=True)), default=0)
    assert latest_due <= redis_now(r) + CLAIM_TIMEOUT_S


def finish_with_a_new_daemon(r, auth, launch, cast) -> None:
    auth.heal()
    daemon = launch("run")
    try:
        assert auth.wait_for(lambda: set(answered(auth)) >= cast.dead, timeout=30), daemon.stderr()
        assert wait_for(lambda: all_settled(r), timeout=10)
        assert daemon.stop() == 0
    finally:
        daemon.proc.kill()
    assert_only_the_dead_deleted(r, auth, cast)


def stale_records_left(r, cast) -> int:
    pipe = r.pipeline(transaction=False)
    for user in cast.stale:
        pipe.exists(CONN + socket_of(user))
    return sum(pipe.execute())


def test_sigterm_mid_sweep_with_a_cascade_batch_in_flight(r, redis_server, auth_service, launch):
    cast = populate(r, stale=1500, live=8500, registered=5)
    auth_service.hang_seconds = HANG_S
    auth_service.fail("hang", path_prefix=AUTH_GUEST)
    # The sweep reads 100 records a page (about 15 stale each); its 5th take waits at the door
    # while the signal lands, so the stop falls mid-sweep however fast or loaded the machine is.
    with HeldDoor((redis_server.host, redis_server.port)) as door:
        door.hold_at(runs_script(scripts.TAKE_GUEST, scripts.TAKE_RECORD), nth=5)
        daemon = launch("run", REAPER_REDIS_URL=door.url, REAPER_REDIS_SCAN_COUNT="100",
                        REAPER_SAFETY_MASS_REAP_PER_SWEEP="100000", **SLOW_BATCHES)
        try:
            assert door.held.wait(30), daemon.stderr()
            assert auth_service.wait_for(lambda: in_flight(auth_service) > 0, timeout=20), daemon.stderr()
            signalled = time.monotonic()
            daemon.proc.send_signal(signal.SIGTERM)
            assert daemon.wait_log("Run: stopping"), daemon.stderr()
            door.release()
            assert daemon.proc.wait(15) == 0, daemon.stderr()
            stop_s = time.monotonic() - signalled
        finally:
            daemon.proc.kill()
    assert "Run: stopped cleanly" in daemon.stderr()
    left = stale_records_left(r, cast)
    assert 0 < left < len(cast.stale), "the SIGTERM did not land in the middle of the sweep"
    assert in_flight(auth_service) == 0  # every DELETE sent was waited for
    assert_nothing_half_done(r, auth_service, cast)
    pending = r.hlen(INTENTS)
    finish_with_a_new_daemon(r, auth_service, launch, cast)
    report("sigterm_mid_sweep", stop_s=f"{stop_s:.2f}", stale_records_left=left, pending_at_stop=pending)


def test_sigterm_during_a_cascade_batch_finishes_the_requests_in_flight(r, auth_service, launch):
    cast = populate(r, stale=24, orphans=6, live=10, registered=3)
    auth_service.hang_seconds = HANG_S
    auth_service.fail("hang", path_prefix=AUTH_GUEST)
    daemon = launch("run", **SLOW_BATCHES)
    try:
        assert daemon.wait_log("Sweep: scanned="), daemon.stderr()  # every dead guest has its intent
        assert auth_service.wait_for(lambda: in_flight(auth_service) == 2, timeout=20), daemon.stderr()
        flying = {req.path[len(AUTH_GUEST):] for req in auth_service.calls("DELETE", AUTH_GUEST)
                  if req.status is None}
        signalled = time.monotonic()
        assert daemon.stop(timeout=15) == 0, daemon.stderr()
        stop_s = time.monotonic() - signalled
    finally:
        daemon.proc.kill()
    assert "Run: stopped cleanly" in daemon.stderr()
    assert flying <= set(answered(auth_service))  # finished, not abandoned
    assert set(answered(auth_service)) | pending_users(r) == cast.dead
    assert_nothing_half_done(r, auth_service, cast)
    answered_at_stop, claimed_left = len(answered(auth_service)), r.zcount(DUE, redis_now(r), "+inf")
    finish_with_a_new_daemon(r, auth_service, launch, cast)
    report("sigterm_mid_batch", stop_s=f"{stop_s:.2f}", answered_at_stop=answered_at_stop,
           claimed_left_pending=claimed_left)


def test_sigterm_does_not_wait_for_a_whole_batch_behind_a_slow_auth_service(r, auth_service, launch):
    cast = populate(r, stale=40)
    auth_service.hang_seconds = HANG_S
    auth_service.fail("hang", path_prefix=AUTH_GUEST)
    daemon = launch("run", REAPER_CASCADE_CONCURRENCY="2")  # the default batch_size, 500
    try:
        assert daemon.wait_log("Sweep: scanned="), daemon.stderr()
        assert auth_service.wait_for(lambda: in_flight(auth_service) == 2, timeout=20), daemon.stderr()
        daemon.proc.send_signal(signal.SIGTERM)
        stopped = wait_for(lambda: daemon.proc.poll() is not None, timeout=3 * HANG_S + 2)
    finally:
        daemon.proc.kill()
    assert stopped, "still finishing the 40 DELETEs it claimed, 2 at a time, after SIGTERM"
    assert daemon.proc.returncode == 0 and "Run: stopped cleanly" in daemon.stderr()
    assert_nothing_half_done(r, auth_service, cast)


def _tgkill(pid: int, tid: int, sig: int) -> None:
    """SIGTERM to one thread of another process, as the kernel may deliver it (os.kill lets the
    kernel choose; tgkill names the thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    sys_tgkill = {"x86_64": 234, "aarch64": 131}[platform.machine()]
    if libc.syscall(sys_tgkill, pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


def test_sigterm_taken_by_any_thread_stops_the_daemon(r, launch):
    populate(r, live=5)
    daemon = launch("run", REAPER_SERVER_LISTEN=f"127.0.0.1:{find_free_port()}")  # its HTTP pool too
    try:
        assert daemon.wait_log("Sweep: scanned="), daemon.stderr()
        pid = daemon.proc.pid
        others = sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid)
        assert others, "the daemon runs threads besides the main one"
        _tgkill(pid, others[-1], signal.SIGTERM)
        stopped = wait_for(lambda: daemon.proc.poll() is not None, timeout=15)
    finally:
        daemon.proc.kill()
    assert stopped, "SIGTERM taken by a worker thread never reached the main thread's wait"
    assert daemon.proc.returncode == 0 and "Run: stopped cleanly" in daemon.stderr()
