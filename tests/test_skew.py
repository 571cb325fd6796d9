"""The writers' clock lead over Redis (reaper/core/skew.py): exact maximum, binned p95, fixed memory."""

import math
import random

import pytest

from reaper.core.skew import AGE_SPAN_S, BIN_S, EXACT_AGES, LEAD_SPAN_S, SAMPLE_EVERY, Skew


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


def fed_in_pages(ages: list[float], sizes: list[int]) -> Skew:
    """A Skew handed ``ages`` page by page, a page of each size in turn (the rest in one)."""
    skew, at = Skew(), 0
    for size in sizes:
        skew.add_all(ages[at:at + size])
        at += size
    skew.add_all(ages[at:])
    return skew


def test_past_the_exact_ages_the_same_ones_are_binned_however_a_sweep_cuts_its_pages():
    """One age in SAMPLE_EVERY past EXACT_AGES, chosen by its place in the sweep: pages of any
    size (empty ones too, and one straddling EXACT_AGES) bin exactly what one page would."""
    rng = random.Random(11)
    ages = [rng.uniform(-3.0, 40.0) for _ in range(EXACT_AGES + 50_003)]
    whole = fed_in_pages(ages, [])
    sizes = [rng.choice([0, 1, 7, 999, 1000, 4093]) for _ in range(200)] + [EXACT_AGES]
    assert fed_in_pages(ages, sizes).bins == whole.bins
    one_by_one = Skew()
    for age in ages:
        one_by_one.add(age)
    assert one_by_one.bins == whole.bins
    sampled = ages[EXACT_AGES::SAMPLE_EVERY]
    assert whole.count == EXACT_AGES + SAMPLE_EVERY * len(sampled)
    assert whole.bins != fed_in_pages(ages[1:], []).bins  # one age fewer ahead: other ones sampled


def test_the_sampled_ages_are_those_at_exact_ages_plus_a_multiple_of_the_step():
    marked = [10.0] * (EXACT_AGES + 3 * SAMPLE_EVERY)
    for k in range(3):
        marked[EXACT_AGES + k * SAMPLE_EVERY] = 20.0  # these three are binned, the ages between are not
    for k in range(1, SAMPLE_EVERY):
        marked[EXACT_AGES + k] = 30.0
    skew = fed_in_pages(marked, [5, EXACT_AGES - 3, 17])
    bin_of = lambda age: int((age + LEAD_SPAN_S) / BIN_S)  # noqa: E731
    assert skew.bins[bin_of(20.0)] == 3 * SAMPLE_EVERY
    assert skew.bins[bin_of(30.0)] == 0
    assert skew.bins[bin_of(10.0)] == EXACT_AGES  # past them, only the ages between samples are 10 s


def test_the_largest_lead_stays_exact_when_its_record_is_not_sampled():
    ages = [5.0] * (EXACT_AGES + 100)
    ages[EXACT_AGES + 1] = -7.25  # one writer 7.25 s ahead, between two samples
    skew = fed_in_pages(ages, [1000] * 70)
    assert skew.max_lead() == 7.25
    assert skew.lead_quantile(0.95) == pytest.approx(-5.0, abs=BIN_S)


def test_a_quantile_read_from_the_samples_of_a_million_ages_is_the_exact_one_within_three_bins():
    """A million fresh records, 6 % of their writers ahead by up to 3 s: p95 and p50 of the
    sampled bins against the exact nearest rank of all of them."""
    rng = random.Random(3)
    ages = [rng.uniform(-3.0, 0.0) if rng.random() < 0.06 else rng.uniform(0.0, 25.0) for _ in range(1_000_000)]
    skew = fed_in_pages(ages, [900] * 1100)
    leads = [-a for a in ages]
    for q in (0.95, 0.5, 0.99):
        exact = nearest_rank(leads, q)
        assert exact - 3 * BIN_S <= skew.lead_quantile(q) <= exact + 3 * BIN_S
    assert skew.max_lead() == max(leads)
    assert abs(skew.count - len(ages)) < SAMPLE_EVERY


def test_sampled_ages_beyond_the_bins_are_counted_as_many_times_as_binned_ones():
    ages = [1.0] * EXACT_AGES + [-LEAD_SPAN_S - 5.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, AGE_SPAN_S + 1.0]
    skew = fed_in_pages(ages, [])
    assert skew.far_ahead == SAMPLE_EVERY and skew.far_behind == SAMPLE_EVERY
    assert skew.max_lead() == LEAD_SPAN_S + 5.0
