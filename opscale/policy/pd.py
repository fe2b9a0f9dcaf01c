"""``pd``: HeteroScale's coordinated prefill/decode policy (Li et al., arXiv 2508.19559).

One robust metric sizes both pools. Decode tokens/s is proportional to the work decode instances do,
unlike GPU utilization (memory-bound decode looks busy at light load) or raw prefill TPS (distorted by
prefix-cache hits). So:

* **Proportional rule.** decode instances = ceil(decode TPS / target TPS per decode instance); prefill
  instances = ceil(decode × prefill_per_decode) — the decode count is chosen and prefill derived from it,
  so the P/D ratio holds to within one prefill instance of rounding (the stabilizer keeps it that way;
  see its "coupled groups" rule). Both pools always move together.
* **Dead band (hysteresis).** With u = decode TPS / (current decode × target), nothing changes while
  scale_in_threshold ≤ u ≤ scale_out_threshold; outside it the proportional rule sets the count.
* **Latency safety net.** Latency is non-linear in load, so it only acts as negative feedback: worst of
  TTFT and TBT over the SLO by more than ``moderate_breach``× ⇒ at least +``moderate_boost`` (10%)
  instances, more than ``severe_breach``× ⇒ at least +``severe_boost`` (20%); always at least +1.
* **Soft scale-in.** A scale-in the stabilizer allows first takes the surplus out of routing
  (``PolicyOutput.draining``; they keep running and stay in ``desired``). It is committed after
  ``soft_scale_in_ticks`` further ticks on which TTFT and TBT were fresh and within SLO (observed at
  most 1.0× the SLO); a breach, stale latency or a rise in load restores them to routing at once.
  Without fresh latency signals a scale-in is not started at all (``soft_scale_in_ticks = 0`` scales in
  directly).
* **Cooldowns** go to the stabilizer: scale-out 60 s, scale-in 300 s by default (in slower than out).

The observed p99 is compared with the SLO when the SLO percentile is above 50 (conservative for p90
SLOs), the p50 otherwise. The defaults here are ours; the paper gives the structure, not the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from opscale.errors import InvalidArgument
from opscale.policy.jsonval import JSONObject, JSONValue, json_int, json_obj, json_opt_float
from opscale.policy.pipeline import own_data, parse_params, plans_for, pool_text, run_stabilizer
from opscale.policy.registry import Built, PolicyDescriptor, base_params, whole_pools
from opscale.policy.stabilizer import CoupledGroup, StabilizerConfig, follower_count
from opscale.policy.types import PolicyInput, PolicyOutput, PolicyState, PoolKey, PoolPlan, Signal
from opscale.pools import ServingMode

if TYPE_CHECKING:
    from opscale.spec import DeploymentSpec


class PdParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target_decode_tps: float = Field(gt=0, description="decode tokens/s one decode instance should carry")
    prefill_per_decode: float = Field(0.5, gt=0, description="P:D ratio; '1:2' or 0.5")
    scale_out_threshold: float = Field(1.1, ge=1.0)
    scale_in_threshold: float = Field(0.7, gt=0.0, le=1.0)
    moderate_breach: float = Field(1.0, gt=0)
    severe_breach: float = Field(1.5, gt=0)
    moderate_boost: float = Field(0.10, gt=0)
    severe_boost: float = Field(0.20, gt=0)
    soft_scale_in_ticks: int = Field(2, ge=0)
    interval_s: float = Field(15.0, gt=0)
    scale_out_cooldown_s: float = Field(60.0, ge=0)
    scale_in_cooldown_s: float = Field(300.0, ge=0)
    max_staleness_s: float = Field(30.0, gt=0)
    prefill_pool: str = "prefill/model"
    decode_pool: str = "decode/model"

    @field_validator("prefill_per_decode", mode="before")
    @classmethod
    def _ratio(cls, value: object) -> object:
        if isinstance(value, str) and ":" in value:
            p, _, d = value.partition(":")
            try:
                return float(p) / float(d)
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"a P:D ratio is two positive numbers like '1:2', got {value!r}") from None
        return value

    @field_validator("prefill_pool", "decode_pool")
    @classmethod
    def _pool(cls, value: str) -> str:
        return pool_text(value)

    @model_validator(mode="after")
    def _cross(self) -> PdParams:
        if self.scale_in_threshold >= self.scale_out_threshold:
            raise ValueError(
                f"scale_in_threshold ({self.scale_in_threshold}) must be below "
                f"scale_out_threshold ({self.scale_out_threshold}): they bound the dead band"
            )
        if self.severe_breach <= self.moderate_breach:
            raise ValueError(
                f"severe_breach ({self.severe_breach}) must exceed moderate_breach ({self.moderate_breach})"
            )
        if self.severe_boost < self.moderate_boost:
            raise ValueError(
                f"severe_boost ({self.severe_boost}) must be at least moderate_boost ({self.moderate_boost})"
            )
        if self.prefill_pool == self.decode_pool:
            raise ValueError("prefill_pool and decode_pool must differ")
        return self


@dataclass(frozen=True, slots=True)
class PdState:
    """A soft scale-in in progress: the counts it would commit, since when, and the ticks it held."""

    pending: Mapping[PoolKey, int] = field(default_factory=dict)
    since_s: float | None = None
    ok_ticks: int = 0

    def to_json(self) -> JSONObject:
        return {
            "pending": {str(k): v for k, v in sorted(self.pending.items())},
            "since_s": self.since_s,
            "ok_ticks": self.ok_ticks,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, JSONValue]) -> PdState:
        pending = {PoolKey.parse(k): json_int(v) for k, v in json_obj(data.get("pending", {})).items()}
        return cls(
            pending=pending,
            since_s=json_opt_float(data.get("since_s")),
            ok_ticks=json_int(data.get("ok_ticks", 0)),
        )


def _ceil(x: float) -> int:
    """ceil that ignores float noise below 1e-9 (3000/1000 stays 3)."""
    return max(0, math.ceil(x - 1e-9))


@dataclass(frozen=True, slots=True)
class _Latency:
    worst: float  # max observed/SLO over the fresh signals; 0 if none observed
    text: str  # "TBT p99 130 ms is 1.30× the 100 ms SLO"
    verifiable: bool  # both TTFT and TBT are fresh


class PdPolicy:
    name: ClassVar[str] = "pd"
    version: ClassVar[str] = "1"

    def __init__(self, params: PdParams) -> None:
        self.params = params
        self.decode = PoolKey.parse(params.decode_pool)
        self.prefill = PoolKey.parse(params.prefill_pool)
        self.stabilizer_defaults = StabilizerConfig(
            scale_up_cooldown_s=params.scale_out_cooldown_s,
            scale_down_cooldown_s=params.scale_in_cooldown_s,
            max_staleness_s=params.max_staleness_s,
        )

    @classmethod
    def from_params(cls, params: Mapping[str, object] | None = None) -> PdPolicy:
        return cls(parse_params(PdParams, params, cls.name))

    @property
    def interval_s(self) -> float:
        return self.params.interval_s

    def _latency(self, inp: PolicyInput, max_age: float) -> _Latency:
        use_p99 = inp.slo.percentile > 50.0
        tag = "p99" if use_p99 else "p50"
        load = inp.load
        checks = (
            ("TTFT", Signal.TTFT, load.ttft_p99_ms if use_p99 else load.ttft_p50_ms, inp.slo.ttft_ms),
            ("TBT", Signal.TBT, load.tbt_p99_ms if use_p99 else load.tbt_p50_ms, inp.slo.tbt_ms),
        )
        worst, text, verifiable = 0.0, "no latency observed", True
        for label, sig, observed, slo in checks:
            age = inp.load.age_s(sig)
            if age is None or age > max_age:
                verifiable = False
                continue
            if observed is not None and observed / slo > worst:
                worst = observed / slo
                text = f"{label} {tag} {observed:g} ms is {worst:.2f}× the {slo:g} ms SLO"
        return _Latency(worst, text, verifiable)

    def decide(self, inp: PolicyInput) -> PolicyOutput:
        p, d_key, p_key = self.params, self.decode, self.prefill
        cfg = self.stabilizer_defaults.resolve(inp.limits)
        cur_d = inp.current[d_key].replicas if d_key in inp.current else 0
        cur_p = inp.current[p_key].replicas if p_key in inp.current else 0
        tps, target = inp.load.decode_tps, p.target_decode_tps
        needed = _ceil(tps / target)
        reasons: list[str] = []

        # proportional rule with a dead band
        u = tps / (cur_d * target) if cur_d > 0 else math.inf if tps > 0 else 0.0
        if cur_d > 0 and p.scale_in_threshold <= u <= p.scale_out_threshold:
            raw_d = cur_d
            reasons.append(
                f"Decode TPS {tps:g} tok/s over {cur_d} decode instances is {u:.0%} of the "
                f"{target:g} tok/s target, inside the dead band [{p.scale_in_threshold:.0%}, "
                f"{p.scale_out_threshold:.0%}]: no change."
            )
        else:
            raw_d = needed
            where = "above" if u > p.scale_out_threshold else "below"
            state_txt = (
                f"is {u:.0%} of the {target:g} tok/s target over {cur_d} decode instances, {where} "
                f"the dead band"
                if cur_d > 0
                else "with no decode instances yet"
            )
            reasons.append(
                f"Decode TPS {tps:g} tok/s {state_txt}: ceil({tps:g} / {target:g}) = {needed} "
                f"decode instances."
            )

        # latency safety net
        lat = self._latency(inp, cfg.max_staleness_s)
        for limit, boost, tier in (
            (p.severe_breach, p.severe_boost, "severe"),
            (p.moderate_breach, p.moderate_boost, "moderate"),
        ):
            if lat.worst > limit:
                floor = max(cur_d + 1, _ceil(cur_d * (1.0 + boost)))
                if floor > raw_d:
                    reasons.append(
                        f"Safety net ({tier}): {lat.text}, over {limit:.1f}×, so at least "
                        f"+{boost:.0%}: {raw_d} → {floor} decode instances."
                    )
                    raw_d = floor
                else:
                    reasons.append(
                        f"Safety net ({tier}): {lat.text}, over {limit:.1f}×; the proportional "
                        f"rule's {raw_d} already exceeds +{boost:.0%} ({floor})."
                    )
                break

        ratio = p.prefill_per_decode
        raw = {d_key: raw_d, p_key: follower_count(raw_d, ratio)}
        reasons.append(
            f"Prefill follows decode at {ratio:g} per decode instance: ceil({raw_d} × {ratio:g}) "
            f"= {raw[p_key]} prefill instances."
        )
        raw_plans = {
            k: replace(inp.current.get(k, PoolPlan(0)), replicas=n, predicted_latency_ms=None, watts=None)
            for k, n in raw.items()
        }
        res = run_stabilizer(
            inp, raw, self.stabilizer_defaults, [Signal.DECODE_TPS], [CoupledGroup(d_key, {p_key: ratio})]
        )
        reasons.extend(res.reasons)
        target_counts = {k: res.replicas[k] for k in (d_key, p_key)}
        current = {d_key: cur_d, p_key: cur_p}

        old = PdState.from_json(own_data(inp, self.name))
        new_state, desired_counts = PdState(), dict(res.replicas)
        stab_state = res.state
        # A soft phase grows what grows now but keeps shrinking pools at current, so no scale-in has
        # happened yet as far as the scale-in cooldown is concerned.
        deferred = {k: max(current[k], target_counts[k]) for k in current}
        deferred_state = replace(
            res.state,
            last_down_s=inp.state.stabilizer.last_down_s,
            last_good={**res.state.last_good, **deferred},
        )
        draining: dict[PoolKey, int] = {}
        shrinking = target_counts[d_key] < cur_d or target_counts[p_key] < cur_p
        if shrinking and p.soft_scale_in_ticks > 0:
            surplus = {k: max(0, current[k] - target_counts[k]) for k in current}
            if not lat.verifiable or lat.worst > 1.0:
                desired_counts.update(deferred)
                stab_state = deferred_state
                why = (
                    "TTFT and TBT must be fresh to verify the SLO"
                    if not lat.verifiable
                    else f"{lat.text}, over the SLO"
                )
                reasons.append(
                    f"Soft scale-in {'cancelled' if old.pending else 'not started'}: {why}; "
                    f"keeping {_fmt(surplus)} in routing."
                )
            elif not old.pending:
                desired_counts.update(deferred)
                stab_state, draining = deferred_state, surplus
                new_state = PdState(pending=target_counts, since_s=inp.now_s, ok_ticks=0)
                reasons.append(
                    f"Soft scale-in started: {_fmt(surplus)} leave routing but keep running; "
                    f"they stop after {p.soft_scale_in_ticks} more ticks within SLO."
                )
            elif old.ok_ticks + 1 >= p.soft_scale_in_ticks:
                reasons.append(
                    f"Soft scale-in committed: the SLO held for {old.ok_ticks + 1} ticks since "
                    f"t={old.since_s:g} s ({lat.text}); stopping {_fmt(surplus)}."
                )
            else:
                desired_counts.update(deferred)
                stab_state, draining = deferred_state, surplus
                new_state = PdState(pending=target_counts, since_s=old.since_s, ok_ticks=old.ok_ticks + 1)
                reasons.append(
                    f"Soft scale-in holding: {old.ok_ticks + 1} of {p.soft_scale_in_ticks} ticks "
                    f"within SLO ({lat.text}); {_fmt(surplus)} stay out of routing."
                )
        elif old.pending:
            why = (
                lat.text
                if lat.worst > 1.0
                else "the stabilizer no longer allows the scale-in (load rose, or a signal went stale)"
            )
            reasons.append(
                f"Soft scale-in cancelled: {why}; restoring {_fmt(_old_surplus(old, current))} to routing."
            )

        return PolicyOutput(
            desired=plans_for(inp, raw_plans, desired_counts),
            reasons=reasons,
            state=PolicyState(policy=self.name, stabilizer=stab_state, data=new_state.to_json()),
            infeasible=list(res.infeasible),
            draining={k: n for k, n in draining.items() if n > 0},
            raw=raw,
            effects=tuple(res.effects),
        )


def _old_surplus(old: PdState, current: Mapping[PoolKey, int]) -> dict[PoolKey, int]:
    """How many instances the cancelled soft scale-in had taken out of routing."""
    return {k: max(0, current.get(k, 0) - n) for k, n in old.pending.items()}


def _fmt(counts: Mapping[PoolKey, int]) -> str:
    parts = [f"{n} {k.stage}" for k, n in counts.items() if n]
    return " and ".join(parts) + " instances" if parts else "no instances"


# --- registration ----------------------------------------------------------------------------------


class PdSpecParams(BaseModel):
    """Parameters of the `pd` policy (HeteroScale: decode tokens/s sizes both pools at a fixed ratio)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_decode_tokens_per_s_per_instance: float = Field(
        gt=0, description="decode tokens/s one decode instance should carry, > 0"
    )
    prefill_per_decode: float = Field(
        0.5, gt=0, le=16, description="prefill instances per decode instance, in (0, 16]"
    )
    scale_out_threshold: float = Field(1.1, gt=0, le=10, description="load/target above which to scale out")
    scale_in_threshold: float = Field(0.7, gt=0, le=10, description="load/target below which to scale in")

    @model_validator(mode="after")
    def _band(self) -> PdSpecParams:
        if self.scale_in_threshold >= self.scale_out_threshold:
            raise ValueError(
                f"scale_in_threshold ({self.scale_in_threshold}) must be below "
                f"scale_out_threshold ({self.scale_out_threshold})"
            )
        return self


def _build(spec: DeploymentSpec, pd: PdSpecParams | None) -> Built:
    if pd is None or spec.mode is not ServingMode.DISAGGREGATED:
        raise InvalidArgument("policy 'pd' needs pd_params and mode 'disaggregated'", field="params")
    params = base_params(spec) | {
        "target_decode_tps": pd.target_decode_tokens_per_s_per_instance,
        "prefill_per_decode": pd.prefill_per_decode,
        "scale_out_threshold": pd.scale_out_threshold,
        "scale_in_threshold": pd.scale_in_threshold,
    }
    # Decode TPS sizes; TTFT and TBT feed the safety net and verify a soft scale-in.
    signals = frozenset({Signal.DECODE_TPS, Signal.TTFT, Signal.TBT})
    return Built(PdPolicy.from_params(params), whole_pools(spec), signals, params)


DESCRIPTOR = PolicyDescriptor(
    name=PdPolicy.name,
    summary="HeteroScale: decode tokens/s sizes prefill and decode pools together at a fixed ratio",
    build=_build,
    params=PdSpecParams,
    params_required=True,
    modes=(ServingMode.DISAGGREGATED,),
    mode_reason="policy 'pd' scales prefill and decode pools together: mode must be 'disaggregated'",
)
