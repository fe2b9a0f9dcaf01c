"""The tail every policy shares: fail-static check → stabilizer → per-pool plans → ``PolicyOutput``; and
parameter validation that turns pydantic's errors into one ``InvalidArgument`` naming field and range.

A policy computes raw replica counts (and, if it chooses them, batch size and GPUs per replica), then
calls ``finish`` — or ``run_stabilizer`` + ``plans_for`` when, like ``pd``, it acts on the stabilized
counts before answering.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
from opscale.policy.types import (
    Infeasibility,
    PolicyInput,
    PolicyOutput,
    PolicyState,
    PoolKey,
    PoolPlan,
    Prediction,
    Signal,
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
) -> StabilizerResult:
    config = defaults.resolve(inp.limits)
    stale = stale_signals(inp.load, required, config.max_staleness_s)
    return stabilize(
        StabilizerInput(
            now_s=inp.now_s,
            raw=raw,
            current={p: plan.replicas for p, plan in inp.current.items()},
            limits=inp.limits,
            config=config,
            state=inp.state.stabilizer,
            stale=stale,
            frozen=inp.frozen,
            groups=groups,
            retired=retired,
        )
    )


def plans_for(
    inp: PolicyInput, raw_plans: Mapping[PoolKey, PoolPlan], replicas: Mapping[PoolKey, int]
) -> dict[PoolKey, PoolPlan]:
    """The plan per pool for the stabilized counts. A count the policy itself chose keeps the policy's
    plan; a count held at current keeps the current plan (its batch size and GPUs fit that count); any
    other count — a step limit or window cut the move short — keeps the policy's batch size and GPUs per
    replica but drops the predicted latency and watts, which were computed for another count."""
    out: dict[PoolKey, PoolPlan] = {}
    for pool, n in replicas.items():
        raw, cur = raw_plans.get(pool), inp.current.get(pool)
        if raw is not None and raw.replicas == n:
            out[pool] = raw
        elif cur is not None and cur.replicas == n:
            out[pool] = cur
        else:
            base = raw or cur or PoolPlan(replicas=n)
            out[pool] = PoolPlan(
                replicas=n, batch_size=base.batch_size, gpus_per_replica=base.gpus_per_replica
            )
    return out


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
) -> PolicyOutput:
    """Stabilize ``raw_plans`` and assemble the output; ``data`` is the policy's next own state;
    ``retired``: pools of a form the policy no longer runs (``StabilizerInput.retired``)."""
    raw = {p: plan.replicas for p, plan in raw_plans.items()}
    res = run_stabilizer(inp, raw, defaults, required, groups, retired)
    return PolicyOutput(
        desired=plans_for(inp, raw_plans, res.replicas),
        reasons=[*reasons, *res.reasons],
        state=PolicyState(policy=policy, stabilizer=res.state, data=dict(data or {})),
        infeasible=[*infeasible, *res.infeasible],
        predicted=predicted,
        raw=raw,
        effects=tuple(res.effects),
    )
