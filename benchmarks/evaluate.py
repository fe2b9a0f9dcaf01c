"""The headline table of BENCHMARKS.md ("Simulation and headline results"): the full evaluation matrix.

Same as ``opscale evaluate --out out/evaluate``; writes results.json, results.md and one PNG per scenario.
Pass ``--quick`` for the CI-sized matrix.
"""

from __future__ import annotations

import sys

from opscale.cli.main import app

if __name__ == "__main__":
    app(["evaluate", "--out", "out/evaluate", *sys.argv[1:]])
