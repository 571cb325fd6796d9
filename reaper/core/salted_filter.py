"""A set of strings that answers "maybe in it" or "surely not", in a few bits each. Pure.

A salted Bloom filter: rbloom's (Rust: a Python loop over a bit array costs ~300 ns a string,
rbloom ~70 ns, and a sweep adds or asks about two or three million of them), sized for twice the
expected count at a 0.1 % false positive rate — about 29 bits a string, 3.5 MiB at a million —
so a list that doubled since the last sweep still stays near 0.1 %, and one that quadrupled
near 5 %. Every use of one in reaper is on the safe side of a false positive (a guest looks
live, or an online entry looks like it has its record: both only wait for the next sweep), and
each filter has a salt of its own: items go in as (salt, item), whose hash mixes the salt in,
so the next sweep's false positives are other strings.
"""

import secrets
from itertools import filterfalse, repeat

from rbloom import Bloom

HEADROOM = 2  # sized for this many times the expected count
FALSE_POSITIVE_RATE = 0.001  # at the size it was made for
MIN_ITEMS = 1 << 18  # ~450 KiB: a small tier's false positives far rarer than a big one's


class SaltedFilter:
    def __init__(self, expected: int):
        self._bloom = Bloom(max(MIN_ITEMS, HEADROOM * expected), FALSE_POSITIVE_RATE)
        self._salt = secrets.randbits(64)
        self.count = 0

    @property
    def size_bytes(self) -> int:
        return self._bloom.size_in_bits // 8

    def add_all(self, items: list[str]) -> None:
        self._bloom.update(zip(repeat(self._salt), items))
        self.count += len(items)

    def __contains__(self, item: str) -> bool:
        return (self._salt, item) in self._bloom

    def surely_not_in(self, items: list[str]) -> list[str]:
        """Those of ``items`` never added (a few that were not may be left out: false positives)."""
        return [item for _, item in filterfalse(self._bloom.__contains__, zip(repeat(self._salt), items))]
