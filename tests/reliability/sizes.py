"""The two sizes of the suite: reduced (CI, `make test`) and full (`make reliability`)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Size:
    name: str
    # load: distinct events at a steady rate, 5% duplicate deliveries mixed in
    load_seconds: float
    load_rate: float
    duplicate_share: float
    # database loss: a load of its own, the database stopped in the middle of it
    outage_load_seconds: float
    outage_load_rate: float
    outage_seconds: float
    # worker crashes: SIGKILLs at random moments of multi-page pulls
    kills: int
    # Codat faults: bursts of 500, 429 with Retry-After and slow answers
    fault_rounds: int
    # bad input: the generated cases always run in full; hypothesis examples per fuzz test
    fuzz_examples: int


FULL = Size(
    name="full",
    load_seconds=60,
    load_rate=50,
    duplicate_share=0.05,
    outage_load_seconds=30,
    outage_load_rate=40,
    outage_seconds=3,
    kills=10,
    fault_rounds=9,
    fuzz_examples=400,
)

REDUCED = Size(
    name="reduced",
    load_seconds=5,
    load_rate=40,
    duplicate_share=0.05,
    outage_load_seconds=10,
    outage_load_rate=30,
    outage_seconds=3,
    kills=3,
    fault_rounds=3,
    fuzz_examples=40,
)


def full_size() -> bool:
    return os.environ.get("RELIABILITY_FULL", "") == "1"


def current_size() -> Size:
    return FULL if full_size() else REDUCED


class SeededRandom(random.Random):
    """A random generator that remembers its seed, so a report can name it."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.seed_value = seed
