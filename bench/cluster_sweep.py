"""A sweep on a Redis Cluster against the same sweep on a single Redis: what the cluster's way of
working costs (reads and takes one a key, a removal in three steps: reaper/store/cluster.py).

    python bench/cluster_sweep.py --guests 100000 --stale 0.1 --repeat 3
    python bench/cluster_sweep.py --guests 100000 --reaper-path DIR     # another copy of reaper

The same N guests (bench/sweep_data.py) go into a private redis-server and into a private local
cluster of three primaries (tests/support/cluster_proc.py: free ports, never 6379, no
persistence), each command sent to the node serving its key. Each round refills both and runs
`python -m reaper run --once` against each, services off, as bench/sweep.py's reaper row does.
Per run: wall, the process's CPU, Redis's CPU (on the cluster: summed over the primaries) and
peak RSS, and whether every stale guest, and only they, went. The cluster's three primaries
share this machine's cores with reaper: a real cluster has a host each.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import sweep as bench  # noqa: E402
import sweep_data as data  # noqa: E402
from redis.crc import key_slot  # noqa: E402
from support.cluster_proc import RedisClusterProcess  # noqa: E402
from support.guests import redis_now  # noqa: E402
from support.redis_proc import RedisProcess  # noqa: E402

from reaper.store import cluster  # noqa: E402


def fill_cluster(server: RedisClusterProcess, args) -> None:
    """The fill of bench/sweep_data.py, each command piped to the node serving its key."""
    server.flushall()
    with server.nodes[0].client() as client:
        now = redis_now(client)
        owner = {}
        for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            node = next(n for n in server.nodes if n.port == int(primary[1]))
            owner.update(dict.fromkeys(range(start, end + 1), node))
    pipes = {node.port: data.RedisPipe(node) for node in server.nodes}
    for key, command in data.each_command(args.guests, args.stale, args.registered, now):
        pipes[owner[key_slot(key)].port].write(command)
    for pipe in pipes.values():
        pipe.close()
    keys = sum(node.dbsize() for node in server.node_clients())
    if keys != args.guests + 1:
        raise RuntimeError(f"cluster fill: {keys} keys, want {args.guests + 1}")


def reaped_on_cluster(server: RedisClusterProcess, args) -> str:
    """As data.leftovers says it of a single Redis: "all" when every stale guest's record and
    entry went and everyone else's stayed."""
    client = cluster.connect(server.url, {"socket_timeout": 60})
    try:
        stale = set(data.stale_indices(args.guests, args.stale))
        names = [data.CONN + data.socket_id(i) for i in range(args.guests)]
        found = [found for start in range(0, len(names), 5000)
                 for found in cluster.exist_each(client, names[start:start + 5000])]
        records_right = all(bool(one) != (i in stale) for i, one in enumerate(found))
        users = [data.user_id(i) for i in sorted(stale)]
        stale_entries = sum(value is not None for start in range(0, len(users), 5000)
                            for value in client.hmget(data.ONLINE, users[start:start + 5000]))
        online = client.hlen(data.ONLINE) == args.guests - len(stale) + args.registered
        return "all" if records_right and stale_entries == 0 and online else "NOT ALL"
    finally:
        client.close()


def run_reaper(url: str, cpu_of, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="reaper-bench-") as cwd:
        before = cpu_of()
        run = bench.run_child(bench.reaper_cmd(None, None), env=bench.reaper_env(url, reaper_path=args.reaper_path),
                              cwd=cwd)
        redis_cpu = cpu_of() - before
    if run.returncode != 0:
        raise RuntimeError(f"reaper exited {run.returncode}:\n{run.output[-3000:]}")
    return {"wall_s": run.wall_s, "cpu_s": run.cpu_s, "redis_cpu_s": redis_cpu, "rss_mb": run.rss_mb}


def one_round(single: RedisProcess, server: RedisClusterProcess, args) -> dict:
    client = single.client(socket_timeout=120)
    dataset = data.fill(single, client, args.guests, args.stale, args.registered)
    results = {"single": run_reaper(single.url, lambda: bench.redis_cpu_s(client), args)}
    left = data.leftovers(client, args.guests, args.stale)
    results["single"]["reaped"] = "all" if left.all_reaped(dataset) else "NOT ALL"
    client.flushall()
    client.close()
    fill_cluster(server, args)
    nodes = server.node_clients()
    results["cluster"] = run_reaper("redis+cluster://" + server.seeds[0],
                                    lambda: sum(bench.redis_cpu_s(node) for node in nodes), args)
    results["cluster"]["reaped"] = reaped_on_cluster(server, args)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guests", type=int, default=100_000)
    parser.add_argument("--stale", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=1, metavar="K")
    parser.add_argument("--reaper-path", help="import reaper from this directory (as bench/sweep.py)")
    args = parser.parse_args(argv)
    args.registered = max(10, args.guests // 100)
    print(f"reaper from {bench.compile_reaper(args.reaper_path)}, byte-compiled", flush=True)
    rounds = []
    with RedisProcess() as single, RedisClusterProcess() as server:
        for round_ in range(1, args.repeat + 1):
            rounds.append(one_round(single, server, args))
            print(f"  round {round_}: " + "; ".join(
                f"{kind} {r['wall_s']:.2f} s, CPU {r['cpu_s']:.2f} s, Redis CPU {r['redis_cpu_s']:.2f} s, "
                f"{r['rss_mb']:.0f} MB, reaped {r['reaped']}" for kind, r in rounds[-1].items()), flush=True)
    print(f"\nN = {args.guests:,} guests, {args.stale:.0%} stale; median of {args.repeat}")
    for kind in ("single", "cluster"):
        medians = {column: statistics.median(r[kind][column] for r in rounds)
                   for column in ("wall_s", "cpu_s", "redis_cpu_s", "rss_mb")}
        print(f"  {kind:<8} wall {medians['wall_s']:6.2f} s   CPU {medians['cpu_s']:6.2f} s   "
              f"Redis CPU {medians['redis_cpu_s']:5.2f} s   RSS {medians['rss_mb']:4.0f} MB   reaped "
              + ", ".join(sorted({r[kind]["reaped"] for r in rounds})))
    ratio = statistics.median(r["cluster"]["wall_s"] / r["single"]["wall_s"] for r in rounds)
    print(f"  cluster/single wall {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
