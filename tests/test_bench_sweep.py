"""bench/sweep.py measures reaper as an installed reaper runs: from bytecode, whatever
PYTHONDONTWRITEBYTECODE says (pip compiles what it installs; the floor's imports are compiled)."""

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import sweep as bench  # noqa: E402


def test_the_reaper_a_row_runs_is_byte_compiled_first(tmp_path):
    shutil.copytree(ROOT / "reaper", tmp_path / "reaper", ignore=shutil.ignore_patterns("__pycache__"))

    where = bench.compile_reaper(str(tmp_path))  # as --reaper-path DIR runs it

    assert where == tmp_path / "reaper"
    sources = {p.relative_to(where).with_suffix("") for p in where.rglob("*.py")}
    compiled = {(p.parent.parent / p.name.split(".")[0]).relative_to(where) for p in where.rglob("__pycache__/*.pyc")}
    assert sources and sources == compiled


def test_another_reaper_is_run_beside_this_one_turn_about_with_its_own_ratios(tmp_path, capsys):
    """--against-path: each round the other copy runs too, on a fresh fill, first in even rounds."""
    shutil.copytree(ROOT / "reaper", tmp_path / "reaper", ignore=shutil.ignore_patterns("__pycache__"))

    assert bench.main(["--guests", "400", "--rows", "floor,reaper", "--against-path", str(tmp_path),
                       "--repeat", "2", "--idle-s", "0.05"]) == 0

    out = capsys.readouterr().out
    table = [line.split()[:2] for line in out.splitlines() if line.startswith(("reaper #", "against #", "floor #"))]
    assert table == [["floor", "#1"], ["reaper", "#1"], ["against", "#1"],
                     ["floor", "#2"], ["against", "#2"], ["reaper", "#2"]]
    runs = [line for line in out.splitlines() if line.startswith(("reaper #", "against #"))]
    assert all("40/40 all" in line and "exit 0" in line for line in runs)
    for name in ("reaper", "against"):
        assert f"{name}/floor process CPU" in out and f"{name}/floor Redis CPU" in out
    assert f"against: reaper from {tmp_path / 'reaper'}, byte-compiled" in out
