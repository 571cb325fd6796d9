"""When a failed cascade step is tried again: exponential backoff with jitter."""

import random
from dataclasses import dataclass

from reaper.core.config import CascadeConfig

MAX_DOUBLINGS = 64  # far past any useful ceiling, far below float overflow


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float
    max_s: float

    @classmethod
    def from_config(cls, cascade: CascadeConfig) -> "RetryPolicy":
        return cls(cascade.retry_initial_s, cascade.retry_max_s)

    def delay(self, attempt: int, rng: random.Random = random) -> float:
        """Seconds to wait after the ``attempt``-th failure (1-based): half fixed, half random,
        so replicas and restarts do not retry a recovering service in lockstep."""
        doublings = min(max(0, attempt - 1), MAX_DOUBLINGS)  # 2.0 ** 1100 overflows a float
        ceiling = min(self.max_s, self.initial_s * 2.0 ** doublings)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)

    def __repr__(self) -> str:
        return f"RetryPolicy(initial={self.initial_s}s, max={self.max_s}s, x2 per failure, jitter 50%)"
