"""The tail every policy shares: fail-static check → stabilizer → per-pool plans → ``PolicyOutput``; and
parameter validation that turns pydantic's errors into one ``InvalidArgument`` naming field and range.

A policy computes raw replica counts (and, if it chooses them, batch size and GPUs per replica), then
calls ``finish`` — or ``run_stabilizer`` + ``plans_for`` when, like ``pd``, it acts on the stabilized
counts before answering.

A change of replica size. The stabilizer compares counts, and a plan may change a pool's GPUs per
replica: 3 × 1 GPU → 2 × 2 GPUs is fewer replicas but more GPUs, and 1 × 8 → 1 × 4 the same count on
half the GPUs. Compared as counts, the first was held back as a scale-in and the second went through at
once, with no scale-down window. So ``finish`` weighs such a change in GPUs: the running replicas count
as ⌈their GPUs / the new size⌉ replicas of the new size, so a move to more GPUs is never a smaller count
and one to fewer always is; a move to as many GPUs counts as a scale-in too (the running count as one
more than the plan's): a roll that saves nothing waits out the scale-down window as one that saves GPUs
does. The pool's stabilizer history is rescaled into replicas of the size the plan asks for, and
``StabilizerState.sizes`` records that size while the old one stays in force.

GPUs are not always what binds. A pool the policy names ``upsized`` holds what the plan sizes for (the
planners: KV memory, ``opscale.policy.planner_policy``) only at the new size, which the running
replicas cannot: its change of size is a scale-up whatever the GPUs, and the running replicas count as
no more than the plan's. On llama3-70b's Azure code replay, decode ran 2 × 2 GPUs, which hold 2 × 38.9k
tokens of KV, when a ramp's plan asked for 1 × 4 GPUs, which hold 508.7k, for 147k–160k tokens
resident. As many GPUs, it weighed as a scale-in and waited out the scale-down cooldown while requests
waited for KV memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from opscale.errors import InvalidArgument
from opscale.policy.jsonval import JSONValue
from opscale.policy.stabilizer import (
    CoupledGroup,
    StabilizerConfig,
    StabilizerInput,
    StabilizerResult,
    stabilize,
    stale_signals,
)
from opscale.policy.stabilizer_config import History
from opscale.policy.types import (
    Infeasibility,
    PolicyInput,
    PolicyOutput,
    PolicyState,
    PoolKey,
    PoolPlan,
    Prediction,
    Signal,
    StabilizerState,
)

_M = TypeVar("_M", bound=BaseModel)


def parse_params(model: type[_M], params: Mapping[str, object] | None, policy: str) -> _M:
    """Validate a policy's parameters; every problem is listed in one ``InvalidArgument``."""
    try:
        return model.model_validate(dict(params or {}))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"]) or "params"
            problems.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
        first = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else None
        raise InvalidArgument(
            f"invalid {policy} policy parameters: " + "; ".join(problems), field=first
        ) from None


def pool_text(text: str) -> str:
    """Pydantic validator body for a "stage/operator" string: pydantic reports ``ValueError``s per field,
    so the domain error is re-raised as one."""
    try:
        PoolKey.parse(text)
    except InvalidArgument as exc:
        raise ValueError(exc.message) from None
    return text


def own_data(inp: PolicyInput, policy: str) -> Mapping[str, JSONValue]:
    """The policy's own part of the state; empty when the state was written by another policy."""
    return inp.state.data if inp.state.policy == policy else {}


def run_stabilizer(
    inp: PolicyInput,
    raw: Mapping[PoolKey, int],
    defaults: StabilizerConfig,
    required: Iterable[Signal],
    groups: Sequence[CoupledGroup] = (),
    retired: frozenset[PoolKey] = frozenset(),
    current: Mapping[PoolKey, int] | None = None,
    state: StabilizerState | None = None,
) -> StabilizerResult:
    """``current``/``state``: the running counts and the history in the units the stabilizer is to
    compare (``finish``, a change of replica size); by default the plan in force's counts and state."""
    config = defaults.resolve(inp.limits)
    stale = stale_signals(inp.load, required, config.max_staleness_s)
    return stabilize(
        StabilizerInput(
            now_s=inp.now_s,
            raw=raw,
            current=current if current is not None else {p: plan.replicas for p, plan in inp.current.items()},
            limits=inp.limits,
            config=config,
            state=state if state is not None else inp.state.stabilizer,
            stale=stale,
            frozen=inp.frozen,
            groups=groups,
            retired=retired,
        )
    )


def plans_for(
    inp: PolicyInput,
    raw_plans: Mapping[PoolKey, PoolPlan],
    replicas: Mapping[PoolKey, int],
    running: Mapping[PoolKey, int] | None = None,
) -> dict[PoolKey, PoolPlan]:
    """The plan per pool for the stabilized counts. A count the policy itself chose keeps the policy's
    plan; a count held at current keeps the current plan (its batch size and GPUs fit that count) but
    the policy's micro-batches (a decode stage's pools run one ping-pong pipeline, not a mix); any
    other count — a step limit or window cut the move short — keeps the policy's replica shape (batch
    size, GPUs, GPU share, micro-batches) but drops the predicted latency and watts, which were computed
    for another count. ``running``: what the current plan counted as where it is not its replica count
    (a change of size)."""
    out: dict[PoolKey, PoolPlan] = {}
    running = running or {}
    for pool, n in replicas.items():
        raw, cur = raw_plans.get(pool), inp.current.get(pool)
        if raw is not None and raw.replicas == n:
            out[pool] = raw
        elif cur is not None and running.get(pool, cur.replicas) == n:
            # the stage's micro-batches are the plan's: held pools run the pipeline their stage runs
            out[pool] = cur if raw is None else replace(cur, micro_batches=raw.micro_batches)
        else:
            base = raw or cur or PoolPlan(replicas=n)
            out[pool] = replace(base, replicas=n, predicted_latency_ms=None, watts=None)
    return out


def _units(n: int, factor: float) -> int:
    return math.ceil(n * factor - 1e-9)


def _running(cur: PoolPlan, raw: PoolPlan, factor: float, upsized: bool) -> int:
    """What the running replicas count as in replicas of the new size (module docstring)."""
    n = _units(cur.replicas, factor)
    if upsized:
        return min(n, raw.replicas)
    more = raw.replicas * raw.gpus > cur.replicas * cur.gpus * (1.0 + 1e-9)
    return n if more else max(n, raw.replicas + 1)


def _rescaled(st: StabilizerState, factors: Mapping[PoolKey, float]) -> StabilizerState:
    """The pools' history and last good count in other units (rounded up: never a smaller max)."""

    def hist(h: Mapping[PoolKey, History]) -> dict[PoolKey, History]:
        return {k: tuple((t, _units(v, factors.get(k, 1.0))) for t, v in e) for k, e in h.items()}

    good = {k: _units(v, factors.get(k, 1.0)) for k, v in st.last_good.items()}
    return replace(st, max_window=hist(st.max_window), min_window=hist(st.min_window), last_good=good)


def finish(
    inp: PolicyInput,
    *,
    policy: str,
    raw_plans: Mapping[PoolKey, PoolPlan],
    reasons: list[str],
    defaults: StabilizerConfig,
    required: Iterable[Signal],
    groups: Sequence[CoupledGroup] = (),
    data: Mapping[str, JSONValue] | None = None,
    infeasible: Sequence[Infeasibility] = (),
    predicted: Prediction | None = None,
    retired: frozenset[PoolKey] = frozenset(),
    upsized: frozenset[PoolKey] = frozenset(),
) -> PolicyOutput:
    """Stabilize ``raw_plans`` and assemble the output; ``data`` is the policy's next own state;
    ``retired``: pools of a form the policy no longer runs (``StabilizerInput.retired``); ``upsized``:
    pools whose change of size is a scale-up whatever the GPUs (module docstring; the policy says why)."""
    raw = {p: plan.replicas for p, plan in raw_plans.items()}
    st = inp.state.stabilizer
    grouped = {m for g in groups for m in g.members}
    resize = {  # pools sized anew (a coupled group's members keep their ratio's counts)
        p: plan
        for p, plan in raw_plans.items()
        if p in inp.current and p not in grouped and plan.replicas and inp.current[p].replicas
    }
    scaled = {  # the history's units → the new size's, where they differ
        p: f
        for p, plan in resize.items()
        if not math.isclose(f := st.sizes.get(p, inp.current[p].gpus) / plan.gpus, 1.0)
    }
    running = {
        p: _running(inp.current[p], plan, inp.current[p].gpus / plan.gpus, p in upsized)
        for p, plan in resize.items()
        if not math.isclose(plan.gpus, inp.current[p].gpus)
    }
    said = [
        f"{p}: {inp.current[p].replicas} × {inp.current[p].gpus:g} GPU → {raw[p]} × "
        f"{raw_plans[p].gpus:g} GPU changes the replicas' size; weighed in GPUs, the running "
        f"{inp.current[p].replicas} count as {n}."
        for p, n in running.items()
        if n != inp.current[p].replicas and p not in upsized
    ]
    counts = {p: plan.replicas for p, plan in inp.current.items()} | running
    res = run_stabilizer(inp, raw, defaults, required, groups, retired, counts, _rescaled(st, scaled))
    desired = plans_for(inp, raw_plans, res.replicas, running)
    # the history is now in the new size's units; where the old size stays in force, say so
    sizes = {p: raw_plans[p].gpus for p in resize if not math.isclose(desired[p].gpus, raw_plans[p].gpus)}
    sizes |= {p: v for p, v in st.sizes.items() if p not in resize and p in res.state.max_window}
    return PolicyOutput(
        desired=desired,
        reasons=[*reasons, *said, *res.reasons],
        state=PolicyState(policy=policy, stabilizer=replace(res.state, sizes=sizes), data=dict(data or {})),
        infeasible=[*infeasible, *res.infeasible],
        predicted=predicted,
        raw=raw,
        effects=tuple(res.effects),
    )
