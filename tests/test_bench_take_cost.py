"""bench/take_cost.py measures what it says: every guest of every call taken, the cost read from
Redis's own counters, and a script that takes nobody refused rather than timed."""

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import take_cost  # noqa: E402


@pytest.mark.parametrize("kind", ["guest", "orphan"])
def test_every_setting_is_measured_in_redis_time_a_guest(capsys, kind):
    assert take_cost.main(["--kind", kind, "--guests", "250", "--rounds", "1"]) == 0

    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(row[1], row[3]) for row in rows] == [("no", "no"), ("no", "yes"), ("yes", "no"), ("yes", "yes")]
    assert all(float(row[4]) > 0 for row in rows)


def test_a_script_that_takes_nobody_is_refused_not_timed(tmp_path):
    lazy = tmp_path / "lazy.lua"
    lazy.write_text("local t = {} for i = 1, 100 do t[i] = 0 end return t")

    for kind in ("guest", "orphan"):
        with pytest.raises(SystemExit, match="not taken"):
            take_cost.main(["--kind", kind, "--script", str(lazy), "--guests", "150", "--rounds", "1"])


@pytest.mark.parametrize("witness", ["value", "digest"])
def test_records_are_compared_with_the_value_or_its_digest_and_every_one_taken(capsys, witness):
    assert take_cost.main(["--witness", witness, "--guests", "250", "--rounds", "1"]) == 0

    out = capsys.readouterr().out
    assert f"compared by {witness}" in out.splitlines()[0]
    assert all(float(line.split()[4]) > 0 for line in out.splitlines()[1:])


def test_a_digest_witness_is_the_sha1_of_the_value_read():
    [(_, args)] = take_cost.calls([b"record 0"], "guest", False, "digest")

    assert args[7:9] == [b"", hashlib.sha1(b"record 0").hexdigest()]


def test_two_versions_take_the_stale_guests_of_one_fill_call_by_call_in_turn(tmp_path):
    other = tmp_path / "other.lua"
    other.write_text(take_cost.scripts.TAKE_GUEST)

    costs = take_cost.interleaved([take_cost.scripts.TAKE_GUEST, other.read_text()], 6000)

    # 600 stale guests, six calls of 100: A B B A A B, every guest taken (or it raises)
    assert [len(each) for each in costs] == [3, 3]
    assert all(cost > 0 for each in costs for cost in each)


def test_against_prints_both_versions_in_redis_time_a_guest(tmp_path, capsys):
    other = tmp_path / "old.lua"
    other.write_text(take_cost.scripts.TAKE_GUEST)

    assert take_cost.main(["--against", str(other), "--guests", "4000", "--witness", "digest"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert "the 400 stale of 4,000 guests, records compared by digest" in out[0]
    assert [line.split()[0] for line in out[1:]] == ["this", "old.lua"]
    assert all("(2 calls)" in line and float(line.split()[-3]) > 0 for line in out[1:])


def test_against_a_version_that_takes_nobody_is_refused_not_timed(tmp_path):
    lazy = tmp_path / "lazy.lua"
    lazy.write_text("local t = {} for i = 1, 100 do t[i] = 0 end return t")

    with pytest.raises(SystemExit, match="not taken"):
        take_cost.main(["--against", str(lazy), "--guests", "4000"])
