"""A set of strings that answers "maybe in it" or "surely not", in a few bits each. Pure.

A salted Bloom filter: 32 to 64 bits a string (4 MiB at a million), two probes, a false positive
rate near 0.3 %. Every use of one in reaper is on the safe side of a false positive (a guest
looks live, or an online entry looks like it has its record: both only wait for the next sweep),
and each filter has a salt of its own, so the next sweep's false positives are other strings.
"""

import secrets

BITS_PER_ITEM = 32
MIN_BITS = 1 << 23  # 1 MiB: a small tier's false positives far rarer than a big one's


class SaltedFilter:
    def __init__(self, expected: int):
        bits = MIN_BITS
        while bits < expected * BITS_PER_ITEM:
            bits <<= 1
        self._mask = bits - 1
        self._bits = bytearray(bits >> 3)
        self._salt = secrets.randbits(64)
        self.count = 0

    @property
    def size_bytes(self) -> int:
        return len(self._bits)

    def add_all(self, items: list[str]) -> None:
        bits, mask, salt = self._bits, self._mask, self._salt
        for item in items:  # runs for every record of a sweep: kept to plain integer work
            h = hash((salt, item))
            i, j = h & mask, (h >> 32) & mask
            bits[i >> 3] |= 1 << (i & 7)
            bits[j >> 3] |= 1 << (j & 7)
        self.count += len(items)

    def __contains__(self, item: str) -> bool:
        return not self.surely_not_in([item])

    def surely_not_in(self, items: list[str]) -> list[str]:
        """Those of ``items`` never added (a few that were not may be left out: false positives)."""
        bits, mask, salt, out = self._bits, self._mask, self._salt, []
        for item in items:
            h = hash((salt, item))
            i, j = h & mask, (h >> 32) & mask
            if not (bits[i >> 3] & (1 << (i & 7)) and bits[j >> 3] & (1 << (j & 7))):
                out.append(item)
        return out
