"""bench/read_cost.py compares what it says: both readers read every record of one fill, and
Redis's figures for each run come back."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import read_cost  # noqa: E402


def test_both_readers_read_every_record_and_are_measured(capsys):
    assert read_cost.main(["--guests", "3000", "--rounds", "2"]) == 0

    lines = capsys.readouterr().out.splitlines()
    runs = [line.split() for line in lines if line.startswith("round")]
    assert [run[2] for run in runs] == ["floor", "reaper", "reaper", "floor"]  # turn about
    medians = {line.split()[0]: line.split() for line in lines if line.split()[:1] in (["floor"], ["reaper"])}
    assert sorted(medians) == ["floor", "reaper"]
    assert all(float(row[row.index("mget") + 1]) > 0 and float(row[row.index("scan") + 1]) > 0
               for row in medians.values())


def test_a_reader_that_misses_records_is_no_run_to_compare(r):
    with pytest.raises(SystemExit, match="read 0 records of 2"):
        read_cost.read_all(r, lambda client: iter([([b"k"], [])]), 2)


@pytest.mark.parametrize("argv", [["--guests", "0"], ["--rounds", "0"]])
def test_nothing_to_measure_is_refused(argv):
    with pytest.raises(SystemExit) as exited:
        read_cost.main(argv)
    assert exited.value.code == 2
