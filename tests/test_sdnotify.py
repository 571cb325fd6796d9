"""systemd's notify protocol (reaper/ops/sdnotify.py) on real AF_UNIX datagram sockets, by path and
by abstract name: in process, and given to a real `reaper run` as NOTIFY_SOCKET."""

import shutil
import tempfile
from pathlib import Path

import pytest

from reaper.core.config import RedisConfig, load_config
from reaper.core.durations import parse_duration
from reaper.core.keys import Keys
from reaper.ops.monitor import Monitor, startup_extension_s
from reaper.store.pause import pause
from reaper.ops.sdnotify import Notifier, socket_address, watchdog_s
from support.notify import NotifySocket
from support.redis_proc import RedisProcess

KEYS = Keys.from_config(RedisConfig())


@pytest.fixture
def short_dir():
    """A directory with a short path: a unix socket's path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request, short_dir):
    sock = NotifySocket(short_dir / "notify" if request.param == "path" else None)
    yield sock
    sock.close()


# -- the protocol, in process ---------------------------------------------------------------------

@pytest.mark.parametrize("value, address", [
    ("/run/systemd/notify", "/run/systemd/notify"),
    ("@/org/freedesktop/systemd1/notify/123", b"\0/org/freedesktop/systemd1/notify/123"),
    ("", None), (None, None),
    ("vsock:2:1234", None),  # newer systemd inside VMs: not spoken here
    ("relative/path", None),
])
def test_socket_address(value, address):
    assert socket_address(value) == address


@pytest.mark.parametrize("environ, seconds", [
    ({"WATCHDOG_USEC": "90000000"}, 90.0),
    ({"WATCHDOG_USEC": "90000000", "WATCHDOG_PID": "4242"}, 90.0),
    ({"WATCHDOG_USEC": "90000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "ninety"}, None),
    ({}, None),
])
def test_watchdog_s(environ, seconds):
    assert watchdog_s(environ, 4242) == seconds


def test_messages_arrive_in_order_on_a_datagram_socket(notify_socket):
    notifier = Notifier(notify_socket.env)
    assert notifier.enabled
    assert notifier.ready("running") and notifier.watchdog() and notifier.stopping("bye")
    assert notify_socket.wait_for("STOPPING=1")
    assert notify_socket.received == ["READY=1\nSTATUS=running", "WATCHDOG=1", "STOPPING=1\nSTATUS=bye"]
    notifier.close()


def test_without_notify_socket_nothing_is_sent_and_no_socket_is_opened(logs):
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready("running") is False and notifier.watchdog() is False
    assert notifier._socket is None
    assert not [m for level, m in logs if level == "WARNING"]


def test_a_gone_socket_never_raises_and_is_logged_once(short_dir, logs):
    notifier = Notifier({"NOTIFY_SOCKET": str(short_dir / "nobody-listens")})
    assert notifier.watchdog() is False
    assert notifier.watchdog() is False
    warnings = [m for level, m in logs if level == "WARNING"]
    assert len(warnings) == 1 and "systemd: cannot notify" in warnings[0] and "nobody-listens" in warnings[0]
    notifier.close()


def test_a_notify_socket_of_another_kind_is_said_and_ignored(logs):
    notifier = Notifier({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled and notifier.ready("running") is False
    assert logs.at("WARNING", "systemd: NOTIFY_SOCKET = 'vsock:2:1234' is not a unix socket path or @name")


def test_a_watchdog_shorter_than_two_sweep_intervals_is_warned_about(notify_socket, logs):
    config = load_config(None, {"REAPER_TIMING_HEARTBEAT_INTERVAL": "30s"}, {})
    short = Monitor(config, Notifier({**notify_socket.env, "WATCHDOG_USEC": "45000000"}))
    short.ready()
    assert logs.at("WARNING", "systemd: WatchdogSec=45s is shorter than 2 x heartbeat_interval (30s)")
    assert notify_socket.wait_for("READY=1")
    long_enough = Monitor(config, Notifier({**notify_socket.env, "WATCHDOG_USEC": "90000000"}))
    long_enough.ready()
    assert len([m for level, m in logs if "WatchdogSec" in m]) == 1
    short.close(), long_enough.close()


# -- a real `reaper run` -----------------------------------------------------------------------------

def test_reaper_run_says_ready_then_feeds_the_watchdog_then_says_stopping(notify_socket, launch):
    daemon = launch("run", **notify_socket.env)
    assert notify_socket.wait_for("READY=1"), daemon.stderr()
    assert notify_socket.wait_for("WATCHDOG=1", count=3), daemon.stderr()  # a sweep turn each
    assert daemon.stop() == 0
    assert notify_socket.wait_for("STOPPING=1"), daemon.stderr()
    notify_socket.drain()
    assert notify_socket.index("READY=1") < notify_socket.index("WATCHDOG=1") < notify_socket.index("STOPPING=1")
    assert "STATUS=running: startup step done" in notify_socket.received[notify_socket.index("READY=1")]
    assert notify_socket.count("READY=1") == 1 and notify_socket.count("STOPPING=1") == 1
    assert "Traceback" not in daemon.stderr()


def test_a_standby_replica_and_a_paused_one_keep_the_watchdog_fed(r, short_dir, launch):
    leader = launch("run")
    assert leader.wait_log("is now the leader"), leader.stderr()
    sock = NotifySocket(short_dir / "standby")
    try:
        standby = launch("run", **sock.env)
        assert standby.wait_log("stands by"), standby.stderr()
        assert sock.wait_for("READY=1") and sock.wait_for("WATCHDOG=1", count=3), standby.stderr()

        pause(r, KEYS, by="ops@test")
        assert standby.wait_log("Paused:") and leader.wait_log("Paused:")
        sock.drain()
        fed = sock.count("WATCHDOG=1")
        assert sock.wait_for("WATCHDOG=1", count=fed + 3), standby.stderr()
        assert standby.stop() == 0 and leader.stop() == 0
    finally:
        sock.close()


def test_the_watchdog_is_fed_while_redis_is_down_so_systemd_does_not_restart_a_waiting_reaper(
        notify_socket, launch, tmp_path):
    with RedisProcess(tmpdir=tmp_path / "redis") as private:
        daemon = launch("run", REAPER_REDIS_URL=private.url, **notify_socket.env)
        assert notify_socket.wait_for("WATCHDOG=1"), daemon.stderr()
        private.stop()
        assert daemon.wait_log("Redis unreachable"), daemon.stderr()
        notify_socket.drain()
        fed = notify_socket.count("WATCHDOG=1")
        assert notify_socket.wait_for("WATCHDOG=1", count=fed + 2), daemon.stderr()
        assert daemon.stop() == 0


# -- the unit ----------------------------------------------------------------------------------------

def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    path = Path(__file__).resolve().parent.parent / "systemd" / "reaper.service"
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_unit_is_type_notify_with_a_watchdog_of_3_sweep_intervals_and_stays_hardened():
    unit = unit_settings()
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    watchdog = parse_duration(unit["WatchdogSec"][0])
    assert watchdog >= 3 * load_config(None, {}, {}).timing.heartbeat_interval_s
    assert "AF_UNIX" in unit["RestrictAddressFamilies"][0].split()  # the notify socket
    # A startup step that makes progress extends itself (EXTEND_TIMEOUT_USEC=): the unit's own
    # bound must not be shorter than one extension, or a slow first step dies before asking.
    assert parse_duration(unit["TimeoutStartSec"][0]) >= startup_extension_s(load_config(None, {}, {}))
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "User": "reaper", "RestartPreventExitStatus": "2"}.items():
        assert unit[key] == [value], key
