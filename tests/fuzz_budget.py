"""How many examples the hypothesis fuzz tests run, and where they report what they saw.

The normal suite runs each with its small default; ``make fuzz`` sets ``OPSCALE_FUZZ_SCALE`` to run many
more (>= 10,000 cases in all) and ``OPSCALE_FUZZ_REPORT`` to a JSON file the tests add their outcome
counts to (BENCHMARKS.md, "Fuzzing", quotes it).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

SCALE = float(os.environ.get("OPSCALE_FUZZ_SCALE", "1"))
REPORT = os.environ.get("OPSCALE_FUZZ_REPORT", "")


def examples(default: int) -> int:
    return max(1, round(default * SCALE))


def report(suite: str, counts: Counter[str]) -> None:
    """Add ``counts`` (outcome -> cases) under ``suite`` in the report file, if one was asked for."""
    if not REPORT:
        return
    path = Path(REPORT)
    data = json.loads(path.read_text()) if path.exists() else {}
    merged = Counter(data.get(suite, {}))
    merged.update(counts)
    data[suite] = dict(sorted(merged.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
