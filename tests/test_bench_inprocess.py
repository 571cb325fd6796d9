"""bench/inprocess.py measures what it says: every variant in every round, each with its settings
and only then, the sweep's phases timed, and the process left as it was found."""

import gc
import inspect
import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import inprocess  # noqa: E402
from support.logs import restore_logging  # noqa: E402,F401 - autouse: the run configures logging as the CLI does
import reaper.sweep.budget  # noqa: E402
from reaper.sweep import sweep as sweeping  # noqa: E402
from reaper.sweep.judging import PageJudge  # noqa: E402


def test_each_variant_runs_with_its_settings_and_the_process_is_left_as_found(capsys):
    first_pass, environ, threshold = sweeping._first_pass, dict(os.environ), gc.get_threshold()
    allowance, interval = reaper.sweep.budget.MAX_HELD_VALUES_BYTES, sys.getswitchinterval()

    # 600 stale: a second look that costs Redis ~5 ms, so that every figure shows at 3 decimals
    assert inprocess.main(["--guests", "6000", "--rounds", "2", "--variant", "values=",
                           "--variant", "digests=reaper.sweep.budget:MAX_HELD_VALUES_BYTES=0,switchinterval=0.002"]) == 0

    lines = capsys.readouterr().out.splitlines()
    runs = [line.split() for line in lines if line.startswith("round ")]
    assert [(r[1], r[2]) for r in runs] == [("1", "values"), ("1", "digests"), ("2", "digests"), ("2", "values")]
    assert all(float(figure) > 0 for run in runs for figure in run[3:])  # a second look each
    medians = lines[lines.index(next(line for line in lines if line.startswith("variant"))) + 1:]
    assert [line.split()[0] for line in medians] == ["values", "digests"]
    assert (sweeping._first_pass, dict(os.environ), gc.get_threshold()) == (first_pass, environ, threshold)
    assert (reaper.sweep.budget.MAX_HELD_VALUES_BYTES, sys.getswitchinterval()) == (allowance, interval)


def test_a_setting_applies_only_to_its_variant_s_runs():
    settings = [("reaper.sweep.budget", "MAX_HELD_VALUES_BYTES", 7), ("", "", 0.002)]
    before = (reaper.sweep.budget.MAX_HELD_VALUES_BYTES, sys.getswitchinterval())

    with inprocess.applied(settings):
        during = (reaper.sweep.budget.MAX_HELD_VALUES_BYTES, sys.getswitchinterval())

    assert during == (7, pytest.approx(0.002))
    assert (reaper.sweep.budget.MAX_HELD_VALUES_BYTES, sys.getswitchinterval()) == before


@pytest.mark.parametrize("variant, problem", [
    ("=reaper.core.gil:SWITCH_S=1", "needs a name"), ("x=SWITCH_S=1", "not module:NAME=value"),
    ("x=reaper.nope:X=1", "no module reaper.nope"), ("x=reaper.core.gil:NOPE=1", "has no NOPE"),
    ("x=reaper.core.gil:SWITCH_S=__import__('os')", "not a Python literal"),
    ("x=switchinterval=fast", "not a Python literal")])
def test_a_variant_that_cannot_be_applied_is_refused_before_any_run(capsys, variant, problem):
    with pytest.raises(SystemExit) as exit_:
        inprocess.main(["--variant", variant])

    assert exit_.value.code == 2 and problem in capsys.readouterr().err



def test_a_run_that_raises_is_not_timed_and_the_process_is_left_as_found(capsys):
    first_pass, environ, allowance = sweeping._first_pass, dict(os.environ), reaper.sweep.budget.MAX_HELD_VALUES_BYTES

    with pytest.raises(TypeError):  # a setting reaper cannot use: its error, as raised
        inprocess.main(["--guests", "200", "--rounds", "1", "--variant", "broken=reaper.sweep.budget:MAX_HELD_VALUES_BYTES='x'"])

    assert "medians" not in capsys.readouterr().out
    assert (sweeping._first_pass, dict(os.environ), reaper.sweep.budget.MAX_HELD_VALUES_BYTES) == \
        (first_pass, environ, allowance)


@pytest.mark.parametrize("how", ["returned", "raised"])
def test_a_run_that_exits_with_an_error_code_stops_the_measuring(monkeypatch, capsys, how):
    def exits(*args, **kwargs):
        if how == "raised":
            raise SystemExit(3)
        return 3

    monkeypatch.setattr(inprocess.cli.cli, "main", exits)
    with pytest.raises(SystemExit, match="exited 3"):
        inprocess.main(["--guests", "50", "--rounds", "1", "--variant", "any="])
    assert "medians" not in capsys.readouterr().out


class _Burner:
    """Functions that spend a known amount of their thread's CPU."""

    @staticmethod
    def burn(seconds: float) -> float:
        started = time.thread_time()
        while time.thread_time() - started < seconds:
            pass
        return seconds

    @classmethod
    def twice(cls, seconds: float) -> float:
        return cls.burn(seconds) + cls.burn(seconds)

    def nested(self, depth: int, seconds: float) -> float:
        return self.burn(seconds) + (self.nested(depth - 1, seconds) if depth else 0.0)


def test_a_part_adds_up_its_threads_cpu_once_per_outermost_call_and_is_put_back():
    burn, twice, nested = (inspect.getattr_static(_Burner, n) for n in ("burn", "twice", "nested"))
    parts = inprocess.Parts([inprocess.parse_part(f"{n}=test_bench_inprocess:_Burner.{n}")
                             for n in ("burn", "twice", "nested")])

    with parts.installed():
        _Burner().nested(2, 0.01)  # three calls deep: its 0.03 s counted once
        threads = [threading.Thread(target=_Burner.twice, args=(0.02,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        spent = parts.figures()
        assert parts.figures() == {"burn": 0.0, "twice": 0.0, "nested": 0.0}  # each call's figures once

    assert spent["nested"] == pytest.approx(0.03, abs=0.01)
    assert spent["twice"] == pytest.approx(0.08, abs=0.02)  # two threads, 0.04 s each
    assert spent["burn"] == pytest.approx(0.03 + 0.08, abs=0.02)  # inside the others, timed on its own
    assert (inspect.getattr_static(_Burner, "burn"), inspect.getattr_static(_Burner, "twice"),
            inspect.getattr_static(_Burner, "nested")) == (burn, twice, nested)


class _Heir(_Burner):
    pass


def test_a_part_named_on_a_subclass_times_its_calls_alone_and_leaves_it_inheriting_again():
    parts = inprocess.Parts([inprocess.parse_part("heir=test_bench_inprocess:_Heir.nested")])

    with parts.installed():
        _Burner().nested(0, 0.01)  # the parent's, not timed
        _Heir().nested(0, 0.02)
        spent = parts.figures()

    assert spent["heir"] == pytest.approx(0.02, abs=0.01)
    assert "nested" not in vars(_Heir) and _Heir.nested is _Burner.nested


@pytest.mark.parametrize("part, problem", [
    ("quick", "not NAME=module:QUALIFIED.NAME"), ("q=reaper.sweep.judging", "not NAME=module:QUALIFIED.NAME"),
    ("q=reaper.nope:PageJudge.quick", "no module reaper.nope"),
    ("q=reaper.sweep.judging:PageJudge.nope", "no function PageJudge.nope"),
    ("q=reaper.sweep.judging:Nope.quick", "no function Nope.quick"),
    ("q=reaper.sweep.budget:MAX_HELD", "no function MAX_HELD")])
def test_a_part_that_names_no_function_is_refused_before_any_run(capsys, part, problem):
    with pytest.raises(SystemExit) as exit_:
        inprocess.main(["--variant", "now=", "--part", part])

    assert exit_.value.code == 2 and problem in capsys.readouterr().err


def test_each_part_is_a_column_of_every_run(capsys):
    quick = inspect.getattr_static(PageJudge, "quick")

    assert inprocess.main(["--guests", "20000", "--rounds", "1", "--variant", "now=",
                           "--part", "quick=reaper.sweep.judging:PageJudge.quick",
                           "--part", "held=reaper.sweep.budget:Budget.hold_rows"]) == 0

    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("variant")).split()
    [run] = [line.split() for line in lines if line.startswith("round ")]
    assert header[-2:] == ["quick", "held"] and len(run) == len(header) + 2
    assert float(run[-2]) > 0 and float(run[-1]) > 0  # 20,000 records judged, 2,000 held as rows
    assert inspect.getattr_static(PageJudge, "quick") is quick
