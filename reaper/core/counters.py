"""One set of counters since start, fed by every job and read by logs and stats."""

import threading
from collections import Counter


class Counters:
    def __init__(self):
        self._lock = threading.Lock()
        self._counts: Counter = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        if amount:
            with self._lock:
                self._counts[name] += amount

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reaped_by_reason(self) -> dict[str, int]:
        prefix = "reaped."
        return {k[len(prefix):]: v for k, v in self.snapshot().items() if k.startswith(prefix)}
