"""Reconnect back-off: exponential with full jitter (as Flower's and AWS's retry guidance do).

Full jitter (a uniform draw in [0, cap_n]) rather than "exponential ± a bit": after placement restarts,
2,000 agents that all lost their stream at the same instant must not all come back at the same instant.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

BASE_S = 0.2
MAX_S = 10.0


@dataclass
class Backoff:
    base_s: float = BASE_S
    max_s: float = MAX_S
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        """The wait before the next attempt; grows 2x per failure up to ``max_s``, uniformly jittered."""
        ceiling = min(self.max_s, self.base_s * 2.0**self.attempt)
        self.attempt += 1
        return self.rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        """After a successful registration the next failure starts small again."""
        self.attempt = 0
