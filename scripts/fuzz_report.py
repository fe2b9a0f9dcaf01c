"""Print ``make fuzz``'s report (tests/fuzz_budget.py writes it) as the Markdown tables BENCHMARKS.md
quotes: cases per suite and outcome, and the RPCs' outcomes per status code summed over methods.

    python scripts/fuzz_report.py out/fuzz/report.json
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

BAD = ("INTERNAL", "UNKNOWN", "HANG", "UNREACHABLE")


def main(path: str) -> int:
    data: dict[str, dict[str, int]] = json.loads(Path(path).read_text())
    total = 0
    bad = 0
    for suite, counts in sorted(data.items()):
        by_outcome: Counter[str] = Counter()
        methods = set()
        for key, n in counts.items():
            method, _, outcome = key.partition(" ") if suite.startswith("rpc") else ("", "", key)
            methods.add(method)
            by_outcome[outcome] += n
        cases = sum(by_outcome.values())
        total += cases
        bad += sum(n for outcome, n in by_outcome.items() if outcome.startswith(BAD))
        scope = f", {len(methods)} methods" if suite.startswith("rpc") else ""
        print(f"\n{suite}: {cases} cases{scope}\n")
        print("| outcome | cases |\n|---|---:|")
        for outcome, n in by_outcome.most_common():
            print(f"| {outcome} | {n} |")
    print(f"\ntotal: {total} cases; INTERNAL, UNKNOWN, unreachable or hung: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
