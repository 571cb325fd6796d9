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
