"""A set of names (str or bytes) that answers "maybe in it" or "surely not", in a few bits each. Pure.

A salted Bloom filter on rbloom (Rust: a Python loop over a bit array costs ~300 ns a string,
and a sweep adds or asks about two or three million of them): 32 bits and three probes per
expected string, 4 MB at a million. Few probes because each is a cache miss in a sweep's busy
memory. False positives: ~0.07 % at the expected count, ~0.5 % when the list doubled since the
last sweep sized it, ~3 % when it quadrupled. Every use of one in reaper is on the safe side of
a false positive (a guest looks live, or an online entry looks like it has its record: both only
wait for the next sweep), and each filter has a salt of its own: items go in as (salt, item),
whose hash mixes the salt in, so the next sweep's false positives are other strings.
"""

import math
import secrets
from itertools import filterfalse, repeat

from rbloom import Bloom

BITS_PER_ITEM = 32
MIN_ITEMS = 1 << 18  # 1 MiB: a small tier's false positives far rarer than a big one's
# rbloom derives its size and probes from (expected items, rate): k = floor(log2(1 / rate)),
# bits = items * ln(1 / rate) / ln(2)^2. This rate gives three probes; the count it is handed
# is scaled so the bits come out at BITS_PER_ITEM a string.
_RATE = 0.12
_BITS_PER_COUNTED = math.log(1 / _RATE) / math.log(2) ** 2


class SaltedFilter:
    def __init__(self, expected: int):
        bits = BITS_PER_ITEM * max(MIN_ITEMS, expected)
        self._bloom = Bloom(math.ceil(bits / _BITS_PER_COUNTED), _RATE)
        self._salt = secrets.randbits(64)
        self.count = 0

    @property
    def size_bytes(self) -> int:
        return self._bloom.size_in_bits // 8

    def add_all(self, items: list[str] | list[bytes]) -> None:
        self._bloom.update(zip(repeat(self._salt), items))
        self.count += len(items)

    def __contains__(self, item: str | bytes) -> bool:
        return (self._salt, item) in self._bloom

    def surely_not_in(self, items: list[str] | list[bytes]) -> list:
        """Those of ``items`` never added (a few that were not may be left out: false positives)."""
        return [item for _, item in filterfalse(self._bloom.__contains__, zip(repeat(self._salt), items))]
