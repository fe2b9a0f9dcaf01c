"""The oracle's search (``opscale.sim.oracle``) with the simulator replaced by a rule, so each verdict is
known: what it returns when its shrink ends on a plan that only the search's own seed passes."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from opscale.policy.types import PoolKey, PoolPlan
from opscale.sim import oracle as oracle_mod
from opscale.sim.fixed import Outcome, Steady

PREFILL, DECODE = PoolKey("prefill", "model"), PoolKey("decode", "model")


def _outcome(passes: bool, gpus: int) -> Outcome:
    tbt = 10.0 if passes else 10_000.0
    return Outcome(
        requests=100, unservable=0, ttft_p99_ms=100.0, tbt_p99_ms=tbt, ttst_p99_ms=tbt,
        ttft_ok=1.0, tbt_ok=1.0 if passes else 0.0, attainment=1.0 if passes else 0.0,
        rejected=0, unfinished=0, gpus=gpus, gpus_placed=float(gpus), memory_violations=0,
    )  # fmt: skip


def test_a_plan_passed_on_the_way_that_every_seed_passes_beats_growing_the_shrunk_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seed 0 passes any decode replica, seed 1 only 4-GPU ones at a pass of 256: the shrink moves decode
    to smaller or other replicas, which seed 1 fails. The plan it started from passes both; growing the
    shrunk one never passes seed 1."""

    def rule(load: Steady, pools: Mapping[PoolKey, PoolPlan], seed: int = 0) -> Outcome:
        dec = pools[DECODE]
        ok = pools[PREFILL].replicas >= 3 and (seed == 0 or (dec.batch_size, dec.gpus) == (256, 4))
        return _outcome(ok, oracle_mod.gpus_of(pools))

    monkeypatch.setattr(oracle_mod, "run_plan", rule)
    start = {PREFILL: PoolPlan(3, 1, 2), DECODE: PoolPlan(1, 256, 4)}
    load = Steady("llama3-70b", 20.0, "fixed:1155/211")
    got = oracle_mod.oracle(load, "model", seeds=(0, 1), start=start)
    assert got.feasible and got.gpus == 10
    assert got.plan[DECODE].batch_size == 256 and got.plan[PREFILL].replicas == 3
    assert all(o.attainment == 1.0 for o in got.outcomes)


def test_no_plan_passing_every_seed_is_reported_infeasible(monkeypatch: pytest.MonkeyPatch) -> None:
    def rule(load: Steady, pools: Mapping[PoolKey, PoolPlan], seed: int = 0) -> Outcome:
        return _outcome(seed == 0, oracle_mod.gpus_of(pools))

    monkeypatch.setattr(oracle_mod, "run_plan", rule)
    start = {PREFILL: PoolPlan(3, 1, 2), DECODE: PoolPlan(1, 256, 4)}
    got = oracle_mod.oracle(Steady("llama3-70b", 20.0), "model", seeds=(0, 1), start=start)
    assert not got.feasible and got.notes
