"""Redis Sentinel for tests: `redis-server <conf> --sentinel` processes watching a master the
test started, on free ports (never 6379), each with its own config file (sentinel rewrites it)."""

from __future__ import annotations

import pytest
import redis

from .redis_proc import RedisProcess
from .standin import wait_for
from .tls import Certificates, client_tls_kwargs, server_tls_args

SERVICE = "mymaster"
SETTLE_TIMEOUT = 15.0
# For a master whose replicas the test waits for: no 5 s pause before the initial sync.
FAST_SYNC = ("--repl-diskless-sync-delay", "0")


class SentinelProcess(RedisProcess):
    """A sentinel monitoring ``master_port`` as ``service`` with quorum 1, so one sentinel alone
    may fail over. ``password`` is the sentinel's own requirepass; ``master_password`` the one it
    needs for the master. With ``certs`` it speaks only TLS, also to the master."""

    def __init__(self, master_port: int, *, service: str = SERVICE, password: str = "",
                 master_password: str = "", certs: Certificates | None = None, **kw) -> None:
        super().__init__(**kw)
        self.master_port, self.service = master_port, service
        self.password, self.master_password, self.certs = password, master_password, certs

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self, **kw) -> redis.Redis:
        if self.password:
            kw.setdefault("password", self.password)
        if self.certs:
            kw = {**client_tls_kwargs(self.certs), **kw}
        return super().client(**kw)

    def master_address(self) -> tuple[str, int] | None:
        with self.client() as client:
            found = client.sentinel_get_master_addr_by_name(self.service)
        return (found[0].decode(), int(found[1])) if found else None

    def wait_for_master(self, port: int, timeout: float = SETTLE_TIMEOUT) -> None:
        """Until this sentinel names the master on ``port`` and sees it up."""
        if not wait_for(lambda: self._sees_master_up(port), timeout=timeout, interval=0.05):
            raise AssertionError(f"sentinel {self.address} never saw master {port} up:\n{self.log_tail()}")

    def _sees_master_up(self, port: int) -> bool:
        with self.client() as client:
            state = client.sentinel_master(self.service)
        return int(state["port"]) == port and state["is_master"] and not (
            state["is_sdown"] or state["is_odown"])

    def wait_for_replica(self, port: int, timeout: float = SETTLE_TIMEOUT) -> None:
        """Until this sentinel knows the replica on ``port`` and its link to the master is up."""
        def known() -> bool:
            with self.client() as client:
                replicas = client.sentinel_slaves(self.service)
            return any(int(r["port"]) == port and r.get("master-link-status") == "ok"
                       and not r["is_sdown"] for r in replicas)

        if not wait_for(known, timeout=timeout, interval=0.05):
            raise AssertionError(f"sentinel {self.address} never saw replica {port}:\n{self.log_tail()}")

    def _config_text(self) -> str:
        lines = [f"sentinel monitor {self.service} {self.host} {self.master_port} 1",
                 # Long enough that a loaded test machine never fails over by itself;
                 # the tests fail over on purpose, with SENTINEL FAILOVER.
                 f"sentinel down-after-milliseconds {self.service} 10000",
                 f"sentinel failover-timeout {self.service} 5000"]
        if self.master_password:
            lines.append(f"sentinel auth-pass {self.service} {self.master_password}")
        if self.password:
            lines.append(f"requirepass {self.password}")
        if self.certs:
            lines.append("tls-replication yes")  # sentinel's own links to the master use TLS
        return "\n".join(lines) + "\n"

    def _command(self) -> list[str]:
        conf = self._dir / f"sentinel-{self.port}.conf"
        conf.write_text(self._config_text())
        tls = server_tls_args(self.certs, self.port, auth_clients=False) if self.certs else []
        return [self._executable, str(conf), "--sentinel", "--port", str(self.port),
                "--bind", self.host, "--dir", str(self._dir), *tls]


class PasswordRedisProcess(RedisProcess):
    """A redis-server with ``requirepass`` (and ``masterauth``, so its replicas may share it);
    its own client() authenticates."""

    def __init__(self, password: str, extra_args=(), **kw) -> None:
        super().__init__([*extra_args, "--requirepass", password, "--masterauth", password], **kw)
        self.password = password

    def client(self, **kw) -> redis.Redis:
        kw.setdefault("password", self.password)
        return super().client(**kw)


def replica_of(master: RedisProcess, **kw) -> RedisProcess:
    """A started replica of ``master`` (started with FAST_SYNC) whose initial sync is done;
    the replica syncs fast too, for when it becomes the master."""
    replica = RedisProcess(["--replicaof", master.host, str(master.port), *FAST_SYNC], **kw).start()

    def synced() -> bool:
        with replica.client() as client:
            return client.info("replication").get("master_link_status") == "up"

    if not wait_for(synced, timeout=SETTLE_TIMEOUT, interval=0.05):
        replica.close()
        raise AssertionError(f"replica {replica.port} never synced with {master.port}")
    return replica


@pytest.fixture
def failover_set(tmp_path):
    """A master, its synced replica, and one sentinel that knows both (a fixture: import it)."""
    started = []
    try:
        master = RedisProcess(FAST_SYNC, tmpdir=tmp_path / "master").start()
        started.append(master)
        replica = replica_of(master, tmpdir=tmp_path / "replica")
        started.append(replica)
        sentinel = SentinelProcess(master.port, tmpdir=tmp_path / "sentinel").start()
        started.append(sentinel)
        sentinel.wait_for_master(master.port)
        sentinel.wait_for_replica(replica.port)
        yield master, replica, sentinel
    finally:
        for process in reversed(started):
            process.close()
