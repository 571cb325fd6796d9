"""How far the writers' clocks run ahead of Redis, seen in the records a sweep judges fresh.

For a fresh record, ``lastHeartbeat - now`` (now = Redis TIME) is the writer's lead: positive
when its clock is ahead of Redis. A writer whose clock is behind looks exactly like a record
that is a little older, so only a lead can be seen; a lag hides in the heartbeat age.

Pure and bounded: a sweep of a million records adds to fixed bins (10 ms wide, 36,000 of
them) and keeps one minimum, whatever the number of records. ``add`` runs once per fresh
record of every sweep, so it is kept to a few operations.
"""

import math

BIN_S = 0.01
LEAD_SPAN_S = 60.0  # leads beyond this share one bin; the maximum stays exact
AGE_SPAN_S = 300.0  # ages beyond this share one bin (a fresh record is rarely this old)
_PER_S = 1 / BIN_S
_BINS = round((LEAD_SPAN_S + AGE_SPAN_S) * _PER_S)


class Skew:
    """Heartbeat ages (``now - lastHeartbeat``) of fresh records, binned; leads read back."""

    __slots__ = ("bins", "least_age", "far_ahead", "far_behind")

    def __init__(self):
        self.bins = [0] * _BINS  # bin i: ages in [i * BIN_S - LEAD_SPAN_S, ... + BIN_S)
        self.least_age = math.inf
        self.far_ahead = 0  # ages below -LEAD_SPAN_S: leads beyond the bins
        self.far_behind = 0  # ages of AGE_SPAN_S or more

    def add(self, age_s: float) -> None:
        self.add_all([age_s])

    def add_all(self, ages: list[float]) -> None:
        """Each age, as add() would: one loop with its names at hand, as a sweep hands in the
        ages of every fresh record of a page."""
        bins, least = self.bins, self.least_age
        for age_s in ages:
            i = int((age_s + LEAD_SPAN_S) * _PER_S)
            if 0 < i < _BINS:
                bins[i] += 1
            else:
                self._edge(age_s, i)
            if age_s < least:
                least = age_s
        self.least_age = least

    def _edge(self, age_s: float, i: int) -> None:
        if age_s < -LEAD_SPAN_S:
            self.far_ahead += 1
        elif i >= _BINS:
            self.far_behind += 1
        else:  # int() truncates towards zero: the first bin's own ages land here
            self.bins[0] += 1

    @property
    def count(self) -> int:
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
