"""Value types every policy shares: what a tick reads, what it decides, and the state it carries.

Policies are pure (CONVENTIONS habit 4): ``decide(PolicyInput) -> PolicyOutput`` reads nothing but its
argument — the time comes in as ``now_s`` — so the decision service and the simulator run the same code
live and in replay. Everything a policy must remember between ticks travels in ``PolicyState``, which
round-trips through JSON so the decision ledger can store it next to the decision it produced.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from opscale.errors import InvalidArgument

# Defined in opscale.pools, the neutral home every layer imports; re-exported for the policy modules.
from opscale.policy.effects import Rule as Rule
from opscale.policy.effects import StabilizerEffect as StabilizerEffect
from opscale.policy.jsonval import (
    JSONObject,
    JSONValue,
    json_float,
    json_int,
    json_obj,
    json_opt_float,
    json_opt_int,
    json_pairs,
)
from opscale.policy.window import LoadWindow as LoadWindow
from opscale.policy.window import Signal as Signal
from opscale.policy.window import check_nonneg
from opscale.pools import PoolKey as PoolKey


@dataclass(frozen=True, slots=True)
class SLO:
    """Latency objectives at a percentile given in percent (99.0 means p99)."""

    ttft_ms: float
    tbt_ms: float
    percentile: float = 99.0

    def __post_init__(self) -> None:
        if not (self.ttft_ms > 0 and self.tbt_ms > 0):
            raise InvalidArgument(
                f"SLO latencies must be > 0 ms, got ttft_ms={self.ttft_ms}, tbt_ms={self.tbt_ms}", field="slo"
            )
        if not 0.0 < self.percentile < 100.0:
            raise InvalidArgument(
                f"SLO.percentile must be in (0, 100), got {self.percentile}", field="percentile"
            )

    @property
    def quantile(self) -> float:
        """The percentile as a probability, for the queueing formulas: 99.0 -> 0.99."""
        return self.percentile / 100.0


@dataclass(frozen=True, slots=True)
class PoolLimits:
    min_replicas: int = 0
    max_replicas: int | None = None  # None: no ceiling

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise InvalidArgument(f"min_replicas must be >= 0, got {self.min_replicas}", field="min_replicas")
        if self.max_replicas is not None and self.max_replicas < self.min_replicas:
            raise InvalidArgument(
                f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})",
                field="max_replicas",
            )


@dataclass(frozen=True, slots=True)
class Limits:
    """The deployment's guard rails. A ``None`` field means "the policy's default" (each policy returns
    its stabilizer defaults, e.g. the HPA-style policy a 300 s scale-down window); see
    ``opscale.policy.stabilizer.StabilizerConfig.resolve``.

    Step limits: a pool may move by at most ``max(max_step_abs, max(1, ceil(max_step_frac × current)))``
    replicas per tick (the larger of the configured ones, like the HPA's default ``selectPolicy: Max``).
    """

    pools: Mapping[PoolKey, PoolLimits] = field(default_factory=dict)
    default_pool: PoolLimits = PoolLimits()
    max_step_abs: int | None = None
    max_step_frac: float | None = None
    scale_up_window_s: float | None = None
    scale_down_window_s: float | None = None
    scale_up_cooldown_s: float | None = None
    scale_down_cooldown_s: float | None = None
    max_staleness_s: float | None = None  # older required signals trigger fail-static
    scale_out_when_stale: bool | None = None  # fail-static may still scale out (default: hold)

    def __post_init__(self) -> None:
        check_nonneg(
            "Limits",
            max_step_frac=self.max_step_frac,
            scale_up_window_s=self.scale_up_window_s,
            scale_down_window_s=self.scale_down_window_s,
            scale_up_cooldown_s=self.scale_up_cooldown_s,
            scale_down_cooldown_s=self.scale_down_cooldown_s,
            max_staleness_s=self.max_staleness_s,
        )
        if self.max_step_abs is not None and self.max_step_abs < 1:
            raise InvalidArgument(f"max_step_abs must be >= 1, got {self.max_step_abs}", field="max_step_abs")

    def for_pool(self, pool: PoolKey) -> PoolLimits:
        return self.pools.get(pool, self.default_pool)


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """How one pool should look. ``batch_size`` ``None``: the engine's own setting stands (whole-replica
    policies do not choose it). ``predicted_latency_ms`` is the pool's latency at the SLO percentile as
    the policy predicted it (queue wait + service along its stage's critical path), if it predicts."""

    replicas: int
    batch_size: int | None = None
    gpus_per_replica: int = 1
    predicted_latency_ms: float | None = None
    watts: float | None = None
    gpu_share: float = 1.0  # below 1: each replica runs on this share of one GPU (opscale.model.sharing)
    micro_batches: int = 1  # decode operator pools: micro-batches per pass in the ping-pong pipeline

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise InvalidArgument(f"PoolPlan.replicas must be >= 0, got {self.replicas}", field="replicas")
        if self.gpus_per_replica < 1:
            raise InvalidArgument(
                f"PoolPlan.gpus_per_replica must be >= 1, got {self.gpus_per_replica}",
                field="gpus_per_replica",
            )
        if not 0.0 < self.gpu_share <= 1.0 or (self.gpu_share < 1.0 and self.gpus_per_replica != 1):
            raise InvalidArgument(
                f"PoolPlan.gpu_share must be in (0, 1], and 1 unless gpus_per_replica is 1; got "
                f"{self.gpu_share} with {self.gpus_per_replica} GPUs per replica",
                field="gpu_share",
            )
        if not 1 <= self.micro_batches <= 64:
            raise InvalidArgument(
                f"PoolPlan.micro_batches must be in [1, 64], got {self.micro_batches}", field="micro_batches"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise InvalidArgument(
                f"PoolPlan.batch_size must be >= 1, got {self.batch_size}", field="batch_size"
            )

    @property
    def gpus(self) -> float:
        """GPUs per replica, a share of one GPU when below 1."""
        return self.gpu_share if self.gpu_share < 1.0 else float(self.gpus_per_replica)

    @classmethod
    def sized(
        cls,
        replicas: int,
        batch_size: int | None,
        gpus: float,
        predicted_latency_ms: float | None = None,
        watts: float | None = None,
        micro_batches: int = 1,
    ) -> PoolPlan:
        """A plan from a planner's GPUs per replica (a share of one GPU when below 1)."""
        whole = gpus >= 1.0
        return cls(
            replicas,
            batch_size,
            int(gpus) if whole else 1,
            predicted_latency_ms,
            watts,
            1.0 if whole else gpus,
            micro_batches,
        )

    def to_json(self) -> JSONObject:
        return {
            "replicas": self.replicas,
            "batch_size": self.batch_size,
            "gpus_per_replica": self.gpus_per_replica,
            "predicted_latency_ms": self.predicted_latency_ms,
            "watts": self.watts,
            "gpu_share": self.gpu_share,
            "micro_batches": self.micro_batches,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, JSONValue]) -> PoolPlan:
        return cls(
            replicas=json_int(data["replicas"]),
            batch_size=json_opt_int(data.get("batch_size")),
            gpus_per_replica=json_int(data.get("gpus_per_replica", 1)),
            predicted_latency_ms=json_opt_float(data.get("predicted_latency_ms")),
            watts=json_opt_float(data.get("watts")),
            gpu_share=json_opt_float(data.get("gpu_share")) or 1.0,
            micro_batches=json_opt_int(data.get("micro_batches")) or 1,
        )


def plan_gpus(plans: Iterable[PoolPlan]) -> int:
    """GPUs a set of pool plans occupies: whole GPUs per replica, and shared replicas packed onto shared
    GPUs (power-of-two shares pack perfectly: ⌈Σ shares⌉)."""
    plans = list(plans)
    whole = sum(p.replicas * p.gpus_per_replica for p in plans if p.gpu_share >= 1.0)
    shared = sum(p.replicas * p.gpu_share for p in plans if p.gpu_share < 1.0)
    return whole + math.ceil(shared - 1e-9)


@dataclass(frozen=True, slots=True)
class Prediction:
    """What the policy expects its plan to deliver, at the SLO percentile."""

    ttft_ms: float | None = None
    tbt_ms: float | None = None
    gpus: int | None = None
    watts: float | None = None
    # Share of the window's requests no configuration can serve within the SLO (a prompt too long to
    # prefill within TTFT even alone on the largest replica, or a request whose KV fits no replica).
    # They are reported, never averaged in: the percentile is planned over the others.
    unservable_fraction: float = 0.0


class InfeasibilityKind(enum.StrEnum):
    SLO_UNREACHABLE = "slo_unreachable"  # no configuration within the limits meets the SLO
    ABOVE_MAX_REPLICAS = "above_max_replicas"  # the load needs more than max_replicas
    BOUNDS_CONFLICT = "bounds_conflict"  # coupled pools' min/max cannot all hold at the ratio
    STALE_SIGNALS = "stale_signals"  # a required signal is missing or stale; fail-static holds
    MISSING_INPUT = "missing_input"  # a pool or parameter the policy needs is absent
    UNSERVABLE_REQUESTS = "unservable_requests"  # some requests cannot meet the SLO on any configuration


@dataclass(frozen=True, slots=True)
class Infeasibility:
    """A demand the policy could not meet, as data (never an exception)."""

    kind: InfeasibilityKind
    message: str
    pool: PoolKey | None = None
    needed: int | None = None
    allowed: int | None = None


# --- state -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StabilizerState:
    """What the stabilizer remembers between ticks, keyed by pool (a coupled group by its leader).

    ``max_window``/``min_window`` are the recommendation history reduced to monotonic queues: for the
    scale-down window only the *max* over the window matters, so an entry that a later, larger-or-equal
    recommendation dominates can never be the answer again and is dropped (likewise for the min). The
    answers equal those over the full history, at O(window distinct values) state instead of one entry per
    tick. Entries are ``(t_s, replicas)``, oldest first, pruned by ``now_s``.

    ``sizes``: the GPUs per replica a pool's windows and last good count are in, where that is not the
    size of the plan in force (a change of replica size the stabilizer held, ``pipeline.finish``).
    """

    max_window: Mapping[PoolKey, tuple[tuple[float, int], ...]] = field(default_factory=dict)
    min_window: Mapping[PoolKey, tuple[tuple[float, int], ...]] = field(default_factory=dict)
    last_up_s: Mapping[PoolKey, float] = field(default_factory=dict)
    last_down_s: Mapping[PoolKey, float] = field(default_factory=dict)
    last_good: Mapping[PoolKey, int] = field(default_factory=dict)  # last decision made on fresh data
    sizes: Mapping[PoolKey, float] = field(default_factory=dict)

    def to_json(self) -> JSONObject:
        def hist(h: Mapping[PoolKey, tuple[tuple[float, int], ...]]) -> JSONValue:
            return {str(k): [[t, v] for t, v in entries] for k, entries in sorted(h.items())}

        out: JSONObject = {
            "max_window": hist(self.max_window),
            "min_window": hist(self.min_window),
            "last_up_s": {str(k): v for k, v in sorted(self.last_up_s.items())},
            "last_down_s": {str(k): v for k, v in sorted(self.last_down_s.items())},
            "last_good": {str(k): v for k, v in sorted(self.last_good.items())},
        }
        if self.sizes:
            out["sizes"] = {str(k): v for k, v in sorted(self.sizes.items())}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, JSONValue]) -> StabilizerState:
        def hist(raw: JSONValue) -> dict[PoolKey, tuple[tuple[float, int], ...]]:
            return {
                PoolKey.parse(k): tuple((json_float(e[0]), json_int(e[1])) for e in json_pairs(v))
                for k, v in json_obj(raw).items()
            }

        def stamps(raw: JSONValue) -> dict[PoolKey, float]:
            return {PoolKey.parse(k): json_float(v) for k, v in json_obj(raw).items()}

        return cls(
            max_window=hist(data.get("max_window", {})),
            min_window=hist(data.get("min_window", {})),
            last_up_s=stamps(data.get("last_up_s", {})),
            last_down_s=stamps(data.get("last_down_s", {})),
            last_good={PoolKey.parse(k): json_int(v) for k, v in json_obj(data.get("last_good", {})).items()},
            sizes=stamps(data.get("sizes", {})),
        )


@dataclass(frozen=True, slots=True)
class PolicyState:
    """Everything carried from one tick to the next: the stabilizer's part, typed, and the policy's own
    part as plain JSON (each policy parses its ``data`` with its own state type's ``from_json``). A state
    written by another policy (``policy`` differs) keeps its stabilizer part — cooldowns and windows
    survive a policy switch — while the new policy starts its own part afresh."""

    policy: str = ""
    stabilizer: StabilizerState = StabilizerState()
    data: Mapping[str, JSONValue] = field(default_factory=dict)

    def to_json(self) -> JSONObject:
        return {"policy": self.policy, "stabilizer": self.stabilizer.to_json(), "data": dict(self.data)}

    @classmethod
    def from_json(cls, data: Mapping[str, JSONValue]) -> PolicyState:
        return cls(
            policy=str(data.get("policy", "")),
            stabilizer=StabilizerState.from_json(json_obj(data.get("stabilizer", {}))),
            data=json_obj(data.get("data", {})),
        )


# --- tick input and output ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """One tick. ``current`` is the plan in force — the last desired counts handed to placement, not the
    replicas that happen to be running yet — so step limits and cooldowns act decision to decision.
    ``params`` carries deployment-specific inputs a policy needs beyond the load (e.g. the operator
    policy's performance model); each policy documents the keys it reads. ``frozen`` is the SRE's freeze."""

    now_s: float
    deployment: str
    load: LoadWindow
    current: Mapping[PoolKey, PoolPlan]
    slo: SLO
    limits: Limits = Limits()
    state: PolicyState = PolicyState()
    params: Mapping[str, object] = field(default_factory=dict)
    frozen: bool = False


@dataclass(frozen=True, slots=True)
class PolicyOutput:
    """The decision. ``desired`` holds every pool's plan after the stabilizer, *including* replicas that
    are ``draining``: soft scale-in keeps them running but out of routing until the policy commits (they
    leave ``desired``) or restores them (``draining`` drops to 0). ``raw`` is the policy's recommendation
    before the stabilizer, for explanations. Each reason is a full sentence with the numbers behind it."""

    desired: Mapping[PoolKey, PoolPlan]
    reasons: list[str]
    state: PolicyState
    infeasible: list[Infeasibility] = field(default_factory=list)
    predicted: Prediction | None = None
    draining: Mapping[PoolKey, int] = field(default_factory=dict)
    raw: Mapping[PoolKey, int] = field(default_factory=dict)
    effects: Sequence[StabilizerEffect] = ()


class Policy(Protocol):
    """A scaling policy. ``interval_s`` is how often the decision loop should call ``decide``."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def interval_s(self) -> float: ...

    def decide(self, inp: PolicyInput) -> PolicyOutput: ...
