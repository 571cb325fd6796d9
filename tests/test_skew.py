"""The writers' clock lead over Redis (reaper/core/skew.py): exact maximum, binned p95, fixed memory."""

import math
import random

import pytest

from reaper.core.skew import AGE_SPAN_S, BIN_S, LEAD_SPAN_S, Skew


def skew_of(*ages: float) -> Skew:
    skew = Skew()
    for age in ages:
        skew.add(age)
    return skew


def nearest_rank(leads: list[float], q: float) -> float:
    ordered = sorted(leads)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_no_fresh_record_means_no_value():
    skew = Skew()
    assert skew.count == 0
    assert skew.max_lead() is None and skew.lead_quantile(0.95) is None


@pytest.mark.parametrize("ages, max_lead, p95", [
    ((3.0,), -3.0, -3.0),  # one writer, 3 s behind or 3 s since its heartbeat: lead -3
    ((-1.5,), 1.5, 1.5),  # one writer 1.5 s ahead of Redis
    ((0.0,), 0.0, 0.0),
    ((-0.25, 5.0, 12.0), 0.25, 0.25),  # the one ahead is the top 5 %
    ((-90.0, 1.0), 90.0, LEAD_SPAN_S),  # beyond the bins: the maximum stays exact, p95 is capped
    ((400.0,), -400.0, -400.0),  # never above the maximum, even past the last bin
    ((250.0,) + (500.0,) * 99, -250.0, -AGE_SPAN_S),  # lags past the last bin read as its edge
])
def test_max_and_p95_of_a_few_ages(ages, max_lead, p95):
    skew = skew_of(*ages)
    assert skew.count == len(ages)
    assert skew.max_lead() == pytest.approx(max_lead)
    assert skew.lead_quantile(0.95) == pytest.approx(p95, abs=BIN_S)


def test_p95_is_the_nearest_rank_rounded_up_to_a_bin_edge_never_above_the_maximum():
    rng = random.Random(5)
    ages = [rng.uniform(-2.0, 30.0) for _ in range(20_000)]
    skew = skew_of(*ages)
    leads = [-a for a in ages]
    exact = nearest_rank(leads, 0.95)
    assert exact <= skew.lead_quantile(0.95) <= exact + BIN_S
    assert skew.max_lead() == max(leads)
    assert nearest_rank(leads, 0.5) <= skew.lead_quantile(0.5) <= nearest_rank(leads, 0.5) + BIN_S


def test_p95_follows_the_leaders_when_more_than_5_percent_run_ahead():
    ages = [10.0] * 90 + [-4.0] * 10  # 10 % of the writers are 4 s ahead
    assert skew_of(*ages).lead_quantile(0.95) == pytest.approx(4.0, abs=BIN_S)
    ages = [10.0] * 97 + [-4.0] * 3  # 3 %: p95 is an ordinary record's
    assert skew_of(*ages).lead_quantile(0.95) == pytest.approx(-10.0, abs=BIN_S)


def test_memory_does_not_grow_with_the_number_of_records():
    skew = Skew()
    bins = len(skew.bins)
    for i in range(200_000):
        skew.add((i % 7000) / 100 - 60.0)
    assert len(skew.bins) == bins and skew.count == 200_000


def test_bin_edges_do_not_lose_records():
    edges = [-LEAD_SPAN_S, -LEAD_SPAN_S + BIN_S / 2, -LEAD_SPAN_S - 1e-9, AGE_SPAN_S - 1e-9, AGE_SPAN_S,
             -0.0, 1e-12, -1e-12]
    skew = skew_of(*edges)
    assert skew.count == len(edges)
    assert skew.max_lead() == pytest.approx(LEAD_SPAN_S + 1e-9)
