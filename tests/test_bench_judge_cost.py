"""bench/judge_cost.py times what it says: both sides judge the same records and entries alike,
or it prints nothing."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import judge_cost  # noqa: E402


def test_both_sides_are_timed_a_record_and_an_entry(capsys):
    assert judge_cost.main(["--guests", "3000", "--rounds", "2"]) == 0

    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert sorted(rows) == ["floor", "reaper"]
    assert all(float(row[1]) > 0 and float(row[3]) > 0 for row in rows.values())


def test_the_two_sides_reach_the_same_verdicts_on_the_benchmark_data():
    pages, entries = judge_cost.dataset(2500, 1_800_000_000.0)
    floor, reaper = judge_cost.Floor(1_800_000_000.0), judge_cost.Reaper(1_800_000_000.0, 2500)

    assert floor.records(pages) == reaper.records(pages) == (2250, 250)
    assert floor.entries(entries) == reaper.entries(entries) == 0  # every entry's record was seen
    assert sum(map(len, entries)) == 2525  # the guests' and the registered users' (N/100, at least 10)


def test_entries_naming_a_socket_no_record_showed_are_looked_up_on_both_sides():
    pages, entries = judge_cost.dataset(1200, 1_800_000_000.0)
    floor, reaper = judge_cost.Floor(1_800_000_000.0), judge_cost.Reaper(1_800_000_000.0, 1200)
    floor.records(pages[1:]), reaper.records(pages[1:])  # the first page's records never read

    assert floor.entries(entries) == reaper.entries(entries) == 1000


@pytest.mark.parametrize("argv", [["--guests", "0"], ["--rounds", "0"]])
def test_nothing_to_measure_is_refused(argv):
    with pytest.raises(SystemExit) as exited:
        judge_cost.main(argv)
    assert exited.value.code == 2
