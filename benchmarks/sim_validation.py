"""Model validation for BENCHMARKS.md: the planners' predicted p99 TTFT/TBT against the simulator's
measurement of the same plan held fixed, on steady Poisson load (``opscale.sim.validate``)."""

from __future__ import annotations

from opscale.sim.validate import run_validation, validation_table

if __name__ == "__main__":
    print(validation_table(run_validation()))
