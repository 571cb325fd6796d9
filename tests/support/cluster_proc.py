"""A real local Redis Cluster for tests: three primaries (`redis-server --cluster-enabled yes`)
joined by `redis-cli --cluster create`, on free ports (never 6379), no persistence."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster

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

    def flushall(self) -> None:
        for node in self.nodes:
            with node.client() as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)
