"""bench/cluster_sweep.py measures what it says: the same guests in a single Redis and in a local
cluster (each key on the node serving it), and every stale guest, and only they, reaped in both."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import cluster_sweep  # noqa: E402


def test_both_sweeps_reap_every_stale_guest_and_only_them(capsys):
    assert cluster_sweep.main(["--guests", "400", "--stale", "0.25"]) == 0

    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  single ")
             or line.startswith("  cluster ")}
    assert set(lines) == {"single", "cluster"}
    assert all(line.endswith("reaped all") for line in lines.values())
    assert "cluster/single wall" in out

