"""How far the writers' clocks run ahead of Redis, seen in the records a sweep judges fresh.

For a fresh record, ``lastHeartbeat - now`` (now = Redis TIME) is the writer's lead: positive
when its clock is ahead of Redis. A writer whose clock is behind looks exactly like a record
that is a little older, so only a lead can be seen; a lag hides in the heartbeat age.

Pure and bounded: a sweep of a million records adds to fixed bins (10 ms wide, 36,000 of
them) and keeps one minimum, whatever the number of records. The minimum (the largest lead) is
exact. The bins take every age of the first EXACT_AGES of a sweep, then one age in SAMPLE_EVERY,
counted SAMPLE_EVERY times: binning is a Python loop over every fresh record, ~0.25 s of CPU a
million, while SCAN hands the records over in no order of age, so a million records' p95 read
from the quarter of a million binned is within a few bins of the exact one (tests/test_skew.py).
Every age still passes through ``min``, in C.
"""

import math

BIN_S = 0.01
LEAD_SPAN_S = 60.0  # leads beyond this share one bin; the maximum stays exact
AGE_SPAN_S = 300.0  # ages beyond this share one bin (a fresh record is rarely this old)
_PER_S = 1 / BIN_S
_BINS = round((LEAD_SPAN_S + AGE_SPAN_S) * _PER_S)
EXACT_AGES = 65_536  # a sweep's first ages, each binned
SAMPLE_EVERY = 4  # past them, one age in this many, counted this many times


class Skew:
    """Heartbeat ages (``now - lastHeartbeat``) of fresh records, binned; leads read back."""

    __slots__ = ("bins", "least_age", "far_ahead", "far_behind", "seen")

    def __init__(self):
        self.bins = [0] * _BINS  # bin i: ages in [i * BIN_S - LEAD_SPAN_S, ... + BIN_S)
        self.least_age = math.inf
        self.far_ahead = 0  # ages below -LEAD_SPAN_S: leads beyond the bins
        self.far_behind = 0  # ages of AGE_SPAN_S or more
        self.seen = 0  # ages handed in, binned or not

    def add(self, age_s: float) -> None:
        self.add_all([age_s])

    def add_all(self, ages: list[float]) -> None:
        """Each age, as a sweep hands in the ages of every fresh record of a page: the least kept,
        each binned while the sweep is within its first EXACT_AGES, then one in SAMPLE_EVERY (the
        ages whose place in the sweep is EXACT_AGES plus a multiple of it)."""
        if not ages:
            return
        self.least_age = min(self.least_age, min(ages))
        exact = min(len(ages), max(0, EXACT_AGES - self.seen))
        if exact:
            self._bin(ages if exact == len(ages) else ages[:exact], 1)
        if exact < len(ages):
            first = exact + (EXACT_AGES - self.seen - exact) % SAMPLE_EVERY
            self._bin(ages[first::SAMPLE_EVERY], SAMPLE_EVERY)
        self.seen += len(ages)

    def _bin(self, ages: list[float], weight: int) -> None:
        """Each age into its bin, counted ``weight`` times. One loop with its names at hand."""
        bins = self.bins
        for age_s in ages:
            i = int((age_s + LEAD_SPAN_S) * _PER_S)
            if 0 < i < _BINS:
                bins[i] += weight
            else:
                self._edge(age_s, i, weight)

    def _edge(self, age_s: float, i: int, weight: int) -> None:
        if age_s < -LEAD_SPAN_S:
            self.far_ahead += weight
        elif i >= _BINS:
            self.far_behind += weight
        else:  # int() truncates towards zero: the first bin's own ages land here
            self.bins[0] += weight

    @property
    def count(self) -> int:
        """Ages in the bins, as counted: every age of a sweep's first EXACT_AGES, then each
        sampled one SAMPLE_EVERY times."""
        return sum(self.bins) + self.far_ahead + self.far_behind

    def max_lead(self) -> float | None:
        """The largest lead seen, exactly; None when no record was fresh."""
        return None if self.least_age == math.inf else -self.least_age

    def lead_quantile(self, q: float) -> float | None:
        """The lead that a fraction ``q`` of fresh records do not exceed, rounded up to a bin
        edge (never above the largest lead seen); None when no record was fresh. Leads beyond
        LEAD_SPAN_S read as LEAD_SPAN_S, lags beyond AGE_SPAN_S as -AGE_SPAN_S (or the maximum)."""
        count = self.count
        if not count:
            return None
        # Nearest rank: the ceil(q * count)-th smallest lead is this rank from the largest.
        rank = count - max(1, math.ceil(q * count)) + 1
        seen = self.far_ahead
        if seen >= rank:
            return LEAD_SPAN_S
        for i, in_bin in enumerate(self.bins):
            seen += in_bin
            if seen >= rank:
                return min(self.max_lead(), round(LEAD_SPAN_S - i * BIN_S, 3))
        return min(self.max_lead(), -AGE_SPAN_S)
