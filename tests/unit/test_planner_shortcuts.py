"""The planners' search shortcuts change no plan: each is checked against the long way round."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import opscale.policy.planner_decode as planner_decode
from opscale.model import get_preset, perf_model
from opscale.policy.decode_load import DecodeLoad
from opscale.policy.decode_step import holder, micro_split, per_replica
from opscale.policy.hybrid import operator_units
from opscale.policy.operator import plan_operator
from opscale.policy.planner_decode import _fewer, decode_frontier
from opscale.policy.prefill_batches import _poisson_rows, chain
from opscale.sim.fixed import Steady, steady_trace
from opscale.sim.observe import window_of

P70 = perf_model(get_preset("llama3-70b"), "H100")


def _passes(per_rep: int, batch: int, micro: int) -> tuple[int, float]:
    per, k = per_replica(float(per_rep), 1, batch)
    return micro_split(per, k, micro)


@pytest.mark.parametrize("batch", [1, 3, 16, 128, 256])
@pytest.mark.parametrize("micro", [1, 2, 4])
def test_the_replica_step_skips_only_counts_with_the_same_passes(batch: int, micro: int) -> None:
    """Between ``per_rep`` and ``_fewer(per_rep)`` residents per replica (at most the pass size: past it
    the search takes every count) every count gives the same pass size and number of passes; at
    ``_fewer`` they change."""
    for per_rep in range(2, batch + 1):
        nxt = _fewer(per_rep, micro)
        assert 1 <= nxt < per_rep
        here = _passes(per_rep, batch, micro)
        assert all(_passes(p, batch, micro) == here for p in range(nxt + 1, per_rep))
        assert _passes(nxt, batch, micro) != here


def _decode_load(rate: float) -> DecodeLoad:
    return DecodeLoad(rate, 250.0, 1125, 1125.0**2, 1251.0, 1251.0**2, 1251, 0.0, 0.0, 0.99)


@pytest.mark.parametrize("rate", [2.0, 40.0, 200.0])
def test_a_cost_cap_cuts_the_frontier_and_nothing_else(rate: float) -> None:
    """The KV-holding pool's options within ``max_cost`` GPUs are the full frontier's, to the option."""
    load = _decode_load(rate)
    tau = 40.0
    n_q, kv_q = load.residents_q(tau), load.kv_tokens_q(tau)
    for unit in operator_units(P70, "decode"):
        if not holder(unit):
            continue
        full = decode_frontier(P70, unit, load, n_q, kv_q, tau, (128, 256), budget_ms=tau, busy_ms=tau)
        assert len(full) > 3
        for cap in (full[0].cost, full[len(full) // 2].cost, full[-1].cost - 1):
            cut = decode_frontier(
                P70, unit, load, n_q, kv_q, tau, (128, 256), budget_ms=tau, busy_ms=tau, max_cost=cap
            )
            assert cut == [o for o in full if o.cost <= cap]


def test_the_frontier_is_that_of_a_step_of_one_resident(monkeypatch: Any) -> None:
    """Stepping over the replica counts that change nothing keeps the frontier of a search that lowers
    the residents per replica one at a time."""
    load = _decode_load(40.0)
    tau = 40.0
    n_q, kv_q = load.residents_q(tau), load.kv_tokens_q(tau)
    cases = [(u, micro) for u in operator_units(P70, "decode") for micro in (1, 2, 4)]

    def frontiers() -> list[list[Any]]:
        return [
            decode_frontier(P70, u, load, n_q, kv_q, tau, (128, 256), budget_ms=tau, busy_ms=tau, micro=m)
            for u, m in cases
        ]

    fast = frontiers()
    monkeypatch.setattr(planner_decode, "_fewer", lambda per_rep, micro: per_rep - 1)
    assert fast == frontiers()
    assert sum(map(len, fast)) > 30


_CASES = [("llama3-70b", 8.0, "sharegpt"), ("qwen2-7b", 32.0, "sharegpt"), ("mixtral-8x7b", 16.0, "fixed")]


@pytest.mark.parametrize(("model", "rps", "mix"), _CASES)
def test_the_incumbent_cut_keeps_the_plan(model: str, rps: float, mix: str, monkeypatch: Any) -> None:
    """The exact search drops options dearer than the best plan found so far: the plan is the one found
    without the cut (qwen2-7b at 32 req/s is where a cut on a tiny pool once changed it)."""
    load = Steady(model, rps, mix, seconds=240.0)
    window = window_of(steady_trace(load, 0), 0.0, load.seconds)
    fast = plan_operator(load.perf(), window, load.slo)
    frontier = planner_decode.decode_frontier

    def uncut(*args: Any, **kwargs: Any) -> Any:
        kwargs["max_cost"] = math.inf
        return frontier(*args, **kwargs)

    monkeypatch.setattr(planner_decode, "decode_frontier", uncut)
    slow = plan_operator(load.perf(), window, load.slo)
    assert fast.pools == slow.pools
    assert fast.prediction == slow.prediction


def test_poisson_rows_are_the_poisson_law() -> None:
    means = np.array([0.0, 0.3, 4.0, 60.0])
    rows = _poisson_rows(means, 40)
    for m, row in zip(means, rows, strict=True):
        pmf = [math.exp(-m) * m**i / math.factorial(i) for i in range(40)]
        assert row[:40] == pytest.approx(pmf, rel=1e-12, abs=1e-300)
        assert row[40] == pytest.approx(max(0.0, 1.0 - sum(pmf)), abs=1e-12)


def test_cached_pass_laws_are_shared_read_only() -> None:
    pts = [(0.6, 100.0, 120.0, (100.0, 150.0, 190.0), 1024), (0.4, 300.0, 330.0, (300.0, 420.0, 520.0), 3000)]
    laws_a, sizes_a = chain(2.0, pts, [0.6, 0.4])
    laws_b, sizes_b = chain(2.0, list(pts), [0.6, 0.4])
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(laws_a, laws_b, strict=True))
    assert np.array_equal(sizes_a.seen, sizes_b.seen)
    with pytest.raises(ValueError):
        laws_a[0][0][0] = 1.0
