"""Model validation for BENCHMARKS.md: the planners' predicted p99 TTFT/TBT against the simulator's
measurement of the same plan held fixed, on steady Poisson load (``opscale.sim.validate``). The same as
``opscale validate``, without the progress bar: ``python benchmarks/sim_validation.py [--quick]``."""

from __future__ import annotations

import json
import os
import sys

from opscale.sim.validate import markdown, run_validation, summary

if __name__ == "__main__":
    points = run_validation(quick="--quick" in sys.argv[1:], workers=os.cpu_count() or 1)
    print(markdown(points))
    print(json.dumps(summary(points), indent=1))
