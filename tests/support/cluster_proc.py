"""A real local Redis Cluster for tests: three primaries (`redis-server --cluster-enabled yes`)
joined by `redis-cli --cluster create`, on free ports (never 6379), no persistence."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from .redis_proc import RedisProcess, find_free_port
from .standin import wait_for

PRIMARIES = 3
SETTLE_TIMEOUT = 20.0


class ClusterNodeProcess(RedisProcess):
    """One primary; its cluster bus on a free port of its own (not port + 10000, which may be taken
    or out of range)."""

    def __init__(self, tmpdir: Path) -> None:
        super().__init__(tmpdir=tmpdir)
        self._dir = tmpdir / f"node-{self.port}"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._extra_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                            "--cluster-node-timeout", "2000", "--cluster-port", str(find_free_port())]


class RedisClusterProcess:
    """Three primaries, 16384 slots split evenly; ``url`` names one of them (a seed)."""

    def __init__(self, tmpdir: str | Path | None = None) -> None:
        self._owns_dir = tmpdir is None
        self._dir = Path(tmpdir) if tmpdir else Path(tempfile.mkdtemp(prefix="reaper-cluster-"))
        self.nodes = [ClusterNodeProcess(self._dir) for _ in range(PRIMARIES)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def seeds(self) -> list[str]:
        return [f"{node.host}:{node.port}" for node in self.nodes]

    def start(self) -> "RedisClusterProcess":
        for node in self.nodes:
            node.start()
        subprocess.run(["redis-cli", "--cluster", "create", *self.seeds, "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=SETTLE_TIMEOUT)
        if not wait_for(self._settled, timeout=SETTLE_TIMEOUT, interval=0.05):
            raise AssertionError("the local cluster never reached cluster_state:ok")
        return self

    def _settled(self) -> bool:
        for node in self.nodes:
            with node.client() as client:
                if client.cluster("INFO").get("cluster_state") != "ok":
                    return False
        return True

    def client(self, **kw) -> RedisCluster:
        kw.setdefault("socket_timeout", 10)
        return RedisCluster(startup_nodes=[ClusterNode(n.host, n.port) for n in self.nodes], **kw)

    def node_clients(self) -> list[redis.Redis]:
        return [node.client() for node in self.nodes]

    def node_of(self, key: bytes) -> ClusterNodeProcess:
        """The primary serving ``key``'s slot now (asked of the cluster, not of a client's map)."""
        with self.nodes[0].client() as client:
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= key_slot(key) <= end:
                    return next(n for n in self.nodes if n.port == int(primary[1]))
        raise AssertionError(f"no node serves the slot of {key!r}")

    def move_slot_of(self, key: bytes, to: ClusterNodeProcess) -> None:
        """Reshard ``key``'s slot, its keys with it, to ``to``, as `redis-cli --cluster reshard`
        does: IMPORTING, MIGRATING, MIGRATE, then SETSLOT NODE on every primary."""
        slot, source = key_slot(key), self.node_of(key)
        with source.client() as src, to.client() as dst:
            source_id, target_id = (c.execute_command("CLUSTER", "MYID").decode() for c in (src, dst))
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while names := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", to.host, to.port, "", 0, 5000, "KEYS", *names)
        for node in [to, source] + [n for n in self.nodes if n not in (to, source)]:
            with node.client() as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def flushall(self) -> None:
        for node in self.nodes:
            with node.client() as client:
                client.flushall()

    def __enter__(self) -> "RedisClusterProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)
