"""The HTTP endpoint is bounded (issue #12): at most a cap of connections, each cut at a deadline
for the whole request however it trickles its bytes; resets and broken pipes go through loguru,
never raw onto stderr; and no flood of hostile clients keeps a guest from its DELETE."""

import json
import os
import socket
import threading
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from reaper.ops.admission import Admission
from reaper.ops.server import CAP, Reply, printable, serve
from support.hostile import SLOW, Flood, Hostile, byte_by_byte, header_lines, reset, silence
from support.limited import LimitedLauncher
from support.redis_proc import find_free_port
from support.standin import wait_for

ROUTES = {"/healthz": lambda: Reply.json(200, {"status": "ok"}),
          "/metrics": lambda: Reply(200, "text/plain", b"# a scrape\n" * 2000)}


@contextmanager
def endpoint(cap: int = 4, deadline_s: float = 1.0, routes=ROUTES):
    served = serve(f"127.0.0.1:{find_free_port()}", routes, cap=cap, deadline_s=deadline_s)
    try:
        yield served, ("127.0.0.1", served.port)
    finally:
        served.close()


def status(address: tuple, path: str = "/healthz") -> int | None:
    """A fresh client's answer, or None when it got none."""
    try:
        return httpx.get(f"http://{address[0]}:{address[1]}{path}", timeout=5).status_code
    except httpx.TransportError:
        return None


def answers(address: tuple, path: str = "/healthz", timeout: float = 15) -> bool:
    """A fresh client gets 200, polling with a generous deadline (over the cap, a newcomer may
    be turned away while every connection held is younger than the grace)."""
    return wait_for(lambda: status(address, path) == 200, timeout=timeout, interval=0.05)


# -- (a) slow clients, more than the cap: cut at the deadline, /healthz answers meanwhile ---------

# Generous for a deadline of 0.5 s, yet shorter than any of http.server's own limits takes to
# close these clients at their pace (a 10 s timeout per read before; 100 headers or a 64 KiB line).
CLOSED_WITHIN_S = 8
TICK_S = 0.25


@pytest.mark.parametrize("variant", sorted(SLOW))
def test_slow_clients_past_the_cap_are_cut_by_the_deadline_while_healthz_answers(variant):
    with endpoint(cap=4, deadline_s=0.5) as (_, address), \
            Flood(address, SLOW[variant], n=12, interval_s=TICK_S) as flood:
        assert answers(address)
        assert wait_for(flood.all_closed, timeout=CLOSED_WITHIN_S), f"{flood.closed()} of 12 closed by the server"


@pytest.mark.parametrize("variant", sorted(SLOW))
def test_within_the_cap_a_slow_client_is_cut_at_the_deadline_not_at_a_per_read_timeout(variant):
    # Two slow clients, a cap of 4: nobody needs their place, only the deadline can cut them.
    with endpoint(cap=4, deadline_s=0.5) as (_, address), \
            Flood(address, SLOW[variant], n=2, interval_s=TICK_S) as flood:
        assert wait_for(flood.all_closed, timeout=CLOSED_WITHIN_S), f"{flood.closed()} of 2 closed by the server"
        assert answers(address)


@pytest.mark.parametrize("variant", ["header_lines", "byte_by_byte", "silence", "huge_header"])
def test_a_flood_that_never_lets_up_does_not_keep_healthz_out(variant):
    with endpoint(cap=4, deadline_s=1.0) as (_, address), \
            Flood(address, SLOW[variant], n=12, renew=True) as flood:
        for _ in range(10):
            assert answers(address), f"the flood renewed {flood.renewed} connections"
        assert wait_for(lambda: flood.renewed > 0, timeout=15)  # the server cut them; they came back


def test_a_client_slower_than_usual_but_within_the_deadline_gets_its_answer():
    with endpoint(cap=4, deadline_s=3.0) as (_, address):
        sock = socket.create_connection(address, timeout=10)
        for piece in (b"GET /healthz", b" HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            sock.sendall(piece)
        with sock:
            assert sock.makefile("rb").readline().startswith(b"HTTP/1.0 200")


def test_a_request_line_with_control_characters_is_logged_escaped_and_cut(logs):
    with endpoint() as (_, address):
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"GET /\x1b[2J\x01" + b"a" * 5000 + b" HTTP/1.0\r\n\r\n")
            assert sock.makefile("rb").readline().startswith(b"HTTP/1.0 404")
        assert wait_for(lambda: logs.at("DEBUG", "404"), timeout=10)
    line = logs.at("DEBUG", "404")[0]
    assert "\\x1b[2J\\x01" in line and "\x1b" not in line and "\x01" not in line
    assert len(line) < 400


def test_closing_the_endpoint_cuts_the_slow_clients_it_still_holds():
    with endpoint(cap=4, deadline_s=60) as (served, address), \
            Flood(address, header_lines, n=3) as flood:
        assert wait_for(lambda: flood.connected() == 3, timeout=15)
        assert answers(address)  # after the three: they have been accepted
        assert flood.closed() == 0  # held: a minute's deadline, room under the cap
        served.close()
        assert wait_for(flood.all_closed, timeout=15)


# -- (b) threads and descriptors stay bounded ----------------------------------------------------

@pytest.mark.parametrize("variant", ["header_lines", "silence", "byte_by_byte"])
def test_threads_stay_within_the_cap_under_a_flood_in_process(variant):
    with endpoint(cap=4, deadline_s=2.0) as (_, address):
        before = threading.active_count()
        with Flood(address, SLOW[variant], n=40, renew=True) as flood:
            counts = []
            wait_for(lambda: counts.append(threading.active_count()) or flood.renewed >= 40, timeout=20)
            assert flood.renewed >= 40, "the server cut too few connections for the flood to renew"
        # +1: the flood's own thread
        assert max(counts) <= before + 1 + 4, counts


def tasks_and_fds(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def endpoint_descriptors(pid: int, port: int) -> int:
    """The descriptors ``pid`` holds for connections to its ``port`` (not the listening one)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    # Distinct sockets, not lines: /proc/net/tcp is read in several chunks, and while a flood
    # opens and closes connections a socket can be listed twice, on both sides of a chunk's end.
    held = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, inode = int(fields[1].split(":")[1], 16), fields[3], fields[9]
        if local_port == port and state != LISTEN and inode in inodes:
            held.add(inode)
    return len(held)


LISTEN = "0A"  # in /proc/net/tcp


@pytest.mark.parametrize("variant", ["header_lines", "silence", "byte_by_byte"])
def test_a_reaper_run_holds_at_most_cap_connections_under_a_flood(launch, variant):
    port = find_free_port()
    daemon = launch("run", REAPER_SERVER_LISTEN=f"127.0.0.1:{port}")
    address = ("127.0.0.1", port)
    assert answers(address), daemon.stderr()
    base_tasks, base_fds = tasks_and_fds(daemon.proc.pid)
    n = 5 * CAP
    with Flood(address, SLOW[variant], n=n, interval_s=0.2) as flood:
        samples = []

        def sampled() -> bool:  # until the server has let go of every one over the cap
            samples.append((endpoint_descriptors(daemon.proc.pid, port), *tasks_and_fds(daemon.proc.pid)))
            return flood.closed() >= n - CAP

        assert wait_for(sampled, timeout=20, interval=0.05), f"{flood.closed()} of {n} let go"
        wait_for(lambda: sampled() and len(samples) > 40, timeout=20, interval=0.05)
        assert answers(address)
    # CAP held, and for a moment one more: the newcomer the accept loop is deciding about. A
    # place is free only once its socket is closed (reaper/ops/server.py shutdown_request): when
    # it went back first, workers the CPU left between the two kept more open (33 seen in CI).
    assert max(held for held, _, _ in samples) <= CAP + 1, samples
    assert max(held for held, _, _ in samples) >= CAP // 2, samples  # the flood did reach it
    # Beside the endpoint's own, the scheduler's pool and the HTTP clients may grow a little.
    slack = 16
    assert max(tasks for _, tasks, _ in samples) <= base_tasks + CAP + slack, (base_tasks, samples)
    assert max(fds for _, _, fds in samples) <= base_fds + CAP + slack, (base_fds, samples)
    assert daemon.stop() == 0


# -- (c) resets and broken pipes: through loguru, nothing raw on stderr --------------------------

def resets(address: tuple) -> None:
    """Client resets (SO_LINGER 0) at every point of a request, and a scrape left unread."""
    for sent in (b"", b"GET /hea", b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
                 b"GET /healthz HTTP/1.1\r\n\r\n", b"GET /metrics HTTP/1.1\r\n\r\n"):
        for _ in range(3):
            sock = socket.create_connection(address, timeout=10)
            sock.sendall(sent)
            reset(sock)


def test_client_resets_log_one_debug_line_each_and_nothing_raw_on_stderr(launch):
    port = find_free_port()
    daemon = launch("run", REAPER_SERVER_LISTEN=f"127.0.0.1:{port}", REAPER_LOG_FORMAT="json",
                    REAPER_LOG_LEVEL="DEBUG")
    address = ("127.0.0.1", port)
    assert answers(address), daemon.stderr()
    resets(address)
    assert daemon.wait_log("connection ended: ConnectionResetError"), daemon.stderr()
    assert answers(address)
    assert daemon.stop() == 0
    stderr = daemon.stderr()
    assert "Traceback" not in stderr and "Exception occurred" not in stderr, stderr[-3000:]
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line is loguru's JSON
    ended = [line for line in lines if "connection ended" in line["message"]]
    assert 0 < len(ended) <= 15 and all(line["level"] == "DEBUG" for line in ended)  # 15 resets


def test_resets_in_process_write_nothing_to_stderr_and_are_logged(capfd, logs):
    with endpoint() as (_, address):
        resets(address)
        assert wait_for(lambda: logs.at("DEBUG", "connection ended: ConnectionResetError"), timeout=10)
        assert answers(address)
    # The test's loguru sink is stderr too: drop its lines, nothing else may remain.
    raw = [line for line in capfd.readouterr().err.splitlines() if " | " not in line]
    assert raw == []
    assert not logs.at("ERROR")


def test_an_answer_read_by_nobody_is_cut_at_the_deadline_and_logged_once(logs):
    big = {"/big": lambda: Reply(200, "text/plain", b"x" * (64 << 20))}  # more than any buffer
    with endpoint(cap=4, deadline_s=1.0, routes={**ROUTES, **big}) as (_, address):
        sock = socket.create_connection(address, timeout=10)
        sock.sendall(b"GET /big HTTP/1.1\r\n\r\n")

        def ended() -> list[str]:
            return logs.at("DEBUG", "connection ended") + logs.at("DEBUG", "timed out")

        assert wait_for(ended, timeout=15)
        assert logs.at("DEBUG", "cut: past its 1s deadline")  # the writer blocked: the deadline cut it
        assert answers(address)
        sock.close()
    assert len(ended()) == 1 and not logs.at("ERROR")


# -- (e) a flood of hostile clients delays no DELETE ---------------------------------------------

@pytest.fixture
def launch_limited(redis_env, auth_service, user_service, tmp_path):
    """launch_limited((soft, hard), *args, **env): a `reaper run` under those open-files limits."""
    launcher = LimitedLauncher(redis_env, auth_service.url, user_service.url, tmp_path)
    yield launcher.start_limited
    launcher.kill_all()


@pytest.mark.parametrize("variant", ["header_lines", "silence", "byte_by_byte"])
def test_a_flood_past_the_descriptor_limit_keeps_no_guest_from_its_delete(r, world, launch_limited,
                                                                         auth_service, variant):
    # Soft and hard limit alike: raising cannot help, only the cap can.
    port = find_free_port()
    daemon = launch_limited((256, 256), "run", REAPER_SERVER_LISTEN=f"127.0.0.1:{port}")
    address = ("127.0.0.1", port)
    assert answers(address), daemon.stderr()
    with Flood(address, SLOW[variant], n=400, interval_s=0.5, renew=True) as flood:
        # In full swing: every connection made once. Not asserted: a server out of descriptors
        # leaves many in its backlog, and that is what this test is about.
        wait_for(lambda: flood.connected() >= 400, timeout=30, interval=0.1)
        world.guest(1, age=400)
        world.guest(2, age=400)
        world.entry("guest_3", "sock3")  # an orphan
        deleted = auth_service.wait_for(lambda: sorted(auth_service.deleted_guests()) ==
                                        ["guest_1", "guest_2", "guest_3"], timeout=20)
        assert deleted, (auth_service.deleted_guests(), daemon.stderr()[-3000:])
        # Each seat freed goes to whoever is first in the backlog, mostly the 400 renewing
        # clients: on a loaded machine a newcomer may wait several rounds of the deadline.
        assert answers(address, timeout=45)
    assert daemon.stop() == 0
    assert "Too many open files" not in daemon.stderr()


# -- the decisions --------------------------------------------------------------------------------

def test_admission_cuts_the_overdue_once_and_gives_places_back():
    seats = Admission(cap=2, deadline_s=5)
    seats.take("a", now=0)
    seats.take("b", now=1)
    assert seats.full() and seats.overdue(now=4.9) == []
    assert seats.overdue(now=5) == ["a"]
    assert seats.overdue(now=6) == ["b"]  # "a" is cut already: said once
    assert seats.full()  # a cut holder keeps its place (and thread) until it gives it back
    seats.give_back("a")
    assert not seats.full() and len(seats) == 1
    seats.give_back("a")  # twice is harmless
    assert len(seats) == 1


def test_admission_makes_room_by_cutting_the_oldest_only_past_the_grace():
    seats = Admission(cap=2, deadline_s=5)  # grace: 0.5 s
    seats.take("a", now=0)
    seats.take("b", now=0.1)
    assert seats.oldest(now=0.5) == []  # "a" may be a quick client not yet answered
    assert seats.oldest(now=0.6) == ["a"]
    assert seats.oldest(now=0.7) == ["b"]  # "a" is cut already
    assert seats.oldest(now=9) == []
    assert seats.overdue(now=9) == []  # both told already


def test_admission_everyone_and_bad_bounds():
    seats = Admission(cap=3, deadline_s=1)
    for name in "abc":
        seats.take(name, now=0)
    assert seats.oldest(now=1) == ["a"]
    assert seats.everyone() == ["b", "c"]
    for cap, deadline_s in ((0, 1), (1, 0), (1, -1)):
        with pytest.raises(ValueError):
            Admission(cap, deadline_s)


def test_printable_escapes_control_characters_and_cuts():
    assert printable("GET /\x1b[2J\x00\x7f\x9b ok") == "GET /\\x1b[2J\\x00\\x7f\\x9b ok"
    long = printable("a" * 1000)
    assert len(long) < 250 and long.endswith("…")


def test_the_hostile_helpers_see_a_close(tmp_path):
    # The helpers themselves: a server that closes at once is seen to have closed.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        hostile = Hostile(listener.getsockname(), silence)
        listener.accept()[0].close()
        assert wait_for(lambda: hostile.tick() or hostile.closed, timeout=10)
        hostile.release()
    assert b"".join(b for b, _ in zip(byte_by_byte(), range(3))) == b"GET"
