"""The oracle's search (``opscale.sim.oracle``) with the simulator replaced by a rule, so each verdict is
known: what it returns when its shrink ends on a plan that only the search's own seed passes, or that
passes the short traces and not the long one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opscale.cli.main import app
from opscale.policy.types import PoolKey, PoolPlan
from opscale.sim import oracle as oracle_mod
from opscale.sim.fixed import Outcome, Steady

PREFILL, DECODE = PoolKey("prefill", "model"), PoolKey("decode", "model")


def _outcome(passes: bool, gpus: int, *, at: str = "decode") -> Outcome:
    """An outcome that passes, or misses at ``at``: prefill (TTFT) or decode (TBT)."""
    ttft = 10_000.0 if not passes and at == "prefill" else 100.0
    tbt = 10_000.0 if not passes and at == "decode" else 10.0
    return Outcome(
        requests=100, unservable=0, ttft_p99_ms=ttft, tbt_p99_ms=tbt, ttst_p99_ms=tbt,
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


def test_growth_off_the_search_path_wins_when_it_is_cheaper(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 1 needs four prefill replicas, seed 0 three. The shrink takes prefill to three and then decode
    to fewer GPUs; the cheapest plan on its path that seed 1 passes still has the 4-GPU decode replica
    (12 GPUs), while growing the shrunk plan's prefill gives 10."""

    def rule(load: Steady, pools: Mapping[PoolKey, PoolPlan], seed: int = 0) -> Outcome:
        ok = pools[PREFILL].replicas >= (4 if seed == 1 else 3)
        return _outcome(ok, oracle_mod.gpus_of(pools), at="prefill")

    monkeypatch.setattr(oracle_mod, "run_plan", rule)
    start = {PREFILL: PoolPlan(5, 1, 2), DECODE: PoolPlan(1, 256, 4)}
    got = oracle_mod.oracle(Steady("llama3-70b", 20.0), "model", seeds=(0, 1), start=start)
    assert got.feasible and got.plan[PREFILL].replicas == 4 and got.plan[DECODE].gpus == 2
    assert got.gpus == 10


def test_no_plan_passing_every_seed_is_reported_infeasible(monkeypatch: pytest.MonkeyPatch) -> None:
    def rule(load: Steady, pools: Mapping[PoolKey, PoolPlan], seed: int = 0) -> Outcome:
        return _outcome(seed == 0, oracle_mod.gpus_of(pools))

    monkeypatch.setattr(oracle_mod, "run_plan", rule)
    start = {PREFILL: PoolPlan(3, 1, 2), DECODE: PoolPlan(1, 256, 4)}
    got = oracle_mod.oracle(Steady("llama3-70b", 20.0), "model", seeds=(0, 1), start=start)
    assert not got.feasible and got.notes


def test_a_plan_that_passes_short_traces_but_not_the_long_one_is_grown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A queue near saturation builds over the long trace only: two prefill replicas pass every 240 s
    trace and fail over 1,800 s, so the oracle answers with three, judged over the long trace too."""

    def rule(load: Steady, pools: Mapping[PoolKey, PoolPlan], seed: int = 0) -> Outcome:
        need = 3 if load.seconds > 240.0 else 2
        return _outcome(pools[PREFILL].replicas >= need, oracle_mod.gpus_of(pools), at="prefill")

    monkeypatch.setattr(oracle_mod, "run_plan", rule)
    start = {PREFILL: PoolPlan(2, 1, 2), DECODE: PoolPlan(1, 256, 4)}
    load = Steady("llama3-70b", 20.0)
    short = oracle_mod.oracle(load, "model", seeds=(0, 1), start=start)
    assert short.feasible and short.plan[PREFILL].replicas == 2 and len(short.outcomes) == 2
    got = oracle_mod.oracle(load, "model", seeds=(0, 1), start=start, confirm_s=1800.0)
    assert got.feasible and got.plan[PREFILL].replicas == 3 and got.gpus == short.gpus + 2
    assert len(got.outcomes) == 3 and got.attainment == 1.0
    assert any("long trace" in n for n in got.notes)


def test_a_long_trial_shorter_than_the_search_trace_is_refused() -> None:
    from opscale.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="long trial"):
        oracle_mod.oracle(Steady("llama3-70b", 20.0, seconds=240.0), "model", confirm_s=100.0)


@pytest.mark.parametrize(
    ("rps", "seconds", "long_s"), [(20.0, 240.0, 1800.0), (2.0, 1540.0, 1800.0), (1.0, 3040.0, 3040.0)]
)
def test_the_cli_runs_a_low_rate_long_enough_for_its_p99(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rps: float, seconds: float, long_s: float
) -> None:
    """`opscale oracle` without --seconds runs what `validate` runs: 3,000 requests after the warm-up, at
    least 240 s (at 2 req/s a 240 s trace holds some 400 requests, four above their p99), and its long
    trial is never shorter."""
    lengths: set[float] = set()

    def rule(load: Steady, pools: Mapping[PoolKey, PoolPlan], seed: int = 0) -> Outcome:
        lengths.add(load.seconds)
        return _outcome(True, oracle_mod.gpus_of(pools))

    monkeypatch.setattr(oracle_mod, "run_plan", rule)
    out = tmp_path / "oracle.json"
    result = CliRunner().invoke(app, ["oracle", "--model", "qwen2-7b", "--rps", str(rps), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert lengths == {seconds, long_s}
    assert json.loads(out.read_text())["feasible"]
