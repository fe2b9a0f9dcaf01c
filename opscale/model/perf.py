"""``PerfModel``: the one object the policies ask about latency, memory and power of an operator.

Built once per (model shape, GPU type) in about a millisecond, it answers from precomputed tables:
0.6 µs (token-keyed operator) to 2.9 µs (prefill attention) for a new question, 0.1 µs for a repeated
one (lru_cache), so a planner can call it hundreds of thousands of times per decision.

Which measurements it uses, per operator: a profiled model whose dimensions for THAT operator equal
ours (see ``operator_signature``; e.g. any Llama-3-8B fine-tune, or Qwen2-57B-A14B's attention for
Qwen2-7B), measured on our GPU type if there is one, else measured on another type and roofline-scaled
(``opscale.model.roofline``). ``sources`` says which, for explanations.

Tensor parallelism over ``gpus_per_replica`` = n GPUs (Megatron-style: heads / FFN columns / experts /
vocab split n ways) is modelled as the ideal split plus the collectives it adds::

    t(n) = t(1) / n + c · (α + 2·(n−1)/n · m / w)        = t(1) / n · (1 + overhead)

with c collectives per pass (attention and ffn/experts: one all-reduce of the residual per layer, after
the O projection and after the down projection respectively; one for a vocab-parallel embedding; one
tiny all-gather of per-shard (max, index) pairs for the lm_head's argmax), m the bytes each reduces
(tokens × hidden × dtype bytes; 8 B per token for the lm_head), w the per-direction link bandwidth
(datasheet NVLink or PCIe figure, which counts both directions, halved), 2·(n−1)/n the share of m a ring
all-reduce moves per GPU, and α a fixed latency per collective. α is an assumption (default 10 µs, the
order of NCCL's small-message latency inside an NVLink node), not a measurement: pass the measured value
for your fabric. The ideal split ignores the latency floor of tiny kernels, so TP looks better than it
is at batch 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from opscale.errors import InvalidArgument
from opscale.model.gpus import GpuSpec, get_gpu
from opscale.model.interp import Curve, Grid, PowerCurve
from opscale.model.operators import (
    OperatorKind,
    OperatorSpec,
    Stage,
    activation_working_bytes,
    layer_traversals,
    operator_kinds,
    operators_for,
    tokens_per_pass,
    weights_bytes,
)
from opscale.model.profiles import ModelProfile, OperatorProfile, packaged_profiles
from opscale.model.roofline import scale_operator
from opscale.model.shapes import ModelShape

ALLREDUCE_LATENCY_US = 10.0
# Share of (limit − idle) an operator draws while busy when its profile has no power rows: the median of
# (W − idle) / (limit − idle) over the 115 rows with watts in ../shared/profiles/h100 (0.846).
DEFAULT_BUSY_FRACTION = 0.85
# Share of a GPU's memory a replica may plan to use; the rest is CUDA context, allocator slack and
# fragmentation (vLLM's default gpu_memory_utilization is 0.9 for the same reason).
USABLE_MEMORY_FRACTION = 0.9
# Bytes the lm_head's vocab-parallel argmax gathers per token: a (max logit, index) pair.
_ARGMAX_GATHER_BYTES = 8


def operator_signature(shape: ModelShape, kind: OperatorKind) -> tuple[int, ...]:
    """The dimensions an operator's latency depends on; equal signatures share measurements."""
    s = shape
    if kind is OperatorKind.EMBEDDING:
        return (s.hidden, s.dtype_bytes)  # a row gather: the vocabulary size does not matter
    if kind is OperatorKind.ATTENTION:
        return (s.hidden, s.heads, s.kv_heads, s.head_dim, s.dtype_bytes)
    if kind is OperatorKind.FFN:
        return (s.hidden, s.ffn, s.dtype_bytes)
    if kind is OperatorKind.EXPERTS:
        return (s.hidden, s.ffn, s.experts, s.top_k, s.shared_expert_ffn, s.dtype_bytes)
    return (s.hidden, s.vocab, s.dtype_bytes)


def find_operator_profile(
    shape: ModelShape, stage: Stage, kind: OperatorKind, gpu: GpuSpec, profiles: Sequence[ModelProfile]
) -> tuple[OperatorProfile, str]:
    """The measurements to use for one operator on ``gpu``, and a sentence saying where they came from."""
    sig = operator_signature(shape, kind)
    matches = [
        p for p in profiles if kind in operator_kinds(p.shape) and operator_signature(p.shape, kind) == sig
    ]
    if not matches:
        have = ", ".join(sorted({f"{p.model}@{p.gpu_type}" for p in profiles})) or "none"
        raise InvalidArgument(
            f"no profile for the {kind.value} operator of {shape.name!r}: no profiled model has the same "
            f"{kind.value} dimensions {sig}, so it cannot be measured-from or roofline-scaled; profiled: "
            f"{have}. Profile this model on a GPU and pass the profile in.",
            field="model",
        )
    # Prefer this GPU type (no scaling), then our own model's file, then a measured card (not derived).
    matches.sort(
        key=lambda p: (p.gpu_type != gpu.key, p.model != shape.name, p.provenance.derived is not None)
    )
    best = matches[0]
    op = best.operator(stage, kind)
    if best.gpu_type == gpu.key:
        return op, f"measured on {gpu.key} ({best.model})"
    src = get_gpu(best.gpu_type)
    return scale_operator(op, best.shape, src, gpu), f"roofline {src.key} -> {gpu.key} from {best.model}"


@dataclass(frozen=True, slots=True)
class _Op:
    """Everything ``PerfModel`` needs about one (stage, operator), precomputed.

    Per-layer latency = ``grid(batch, length)`` (attention's length-dependent part, or all of it) +
    ``curve(tokens)`` (token-keyed operators, or the token-keyed pieces of prefill attention).
    """

    spec: OperatorSpec
    curve: Curve | None
    grid: Grid | None
    power: PowerCurve | None
    collectives: int
    comm_bytes_per_token: int
    source: str


def _latency_tables(
    kind: OperatorKind, stage: Stage, op: OperatorProfile
) -> tuple[Curve | None, Grid | None]:
    pts = op.points
    if kind is not OperatorKind.ATTENTION:
        return Curve([p.x for p in pts], [p.latency_ms for p in pts]), None
    if stage is Stage.PREFILL and all(any(n == "attention_core" for n, _ in p.parts_ms) for p in pts):
        # Split prefill attention: its norms and projections are linear in tokens (a Curve over
        # batch × seq_len) while the causal core grows with seq_len² (a Grid extrapolated in S²). A single
        # grid over the totals would extrapolate the whole sum linearly in S and, for prompts past the
        # longest measured (8192), underestimate the core several-fold.
        linear: dict[float, float] = {}
        core = []
        for p in pts:
            parts = dict(p.parts_ms)
            c = parts.pop("attention_core")
            linear[p.x] = max(linear.get(p.x, 0.0), sum(parts.values()))
            core.append((float(p.batch or 1), float(p.seq_len or 1), c))
        return Curve(list(linear), list(linear.values())), Grid(core, length_power=2)
    return None, Grid([(float(p.batch or p.x), float(p.seq_len or p.kv_len or 1), p.latency_ms) for p in pts])


class PerfModel:
    """Latency, memory and power of one model's operators on one GPU type."""

    __slots__ = ("_cached", "_link_s_per_byte", "_ops", "allreduce_latency_ms", "gpu", "shape", "sources")

    def __init__(
        self,
        shape: ModelShape,
        gpu: str | GpuSpec,
        *,
        profiles: Sequence[ModelProfile] | None = None,
        allreduce_latency_us: float = ALLREDUCE_LATENCY_US,
    ) -> None:
        self.shape = shape
        self.gpu = gpu if isinstance(gpu, GpuSpec) else get_gpu(gpu)
        self.allreduce_latency_ms = allreduce_latency_us / 1e3
        # ms per byte over one direction of the link (datasheets quote both directions together).
        self._link_s_per_byte = 1e3 / (self.gpu.link_bytes_s / 2)
        available = packaged_profiles() if profiles is None else tuple(profiles)
        ops: dict[tuple[str, str], _Op] = {}
        for stage in Stage:
            for spec in operators_for(shape, stage):
                op, source = find_operator_profile(shape, stage, spec.kind, self.gpu, available)
                ops[(stage, spec.kind)] = self._build(spec, op, source)
        # Keyed by (str, str): Stage and OperatorKind are StrEnums, so plain strings find the same entries.
        self._ops: Mapping[tuple[str, str], _Op] = ops
        self.sources: Mapping[tuple[str, str], str] = {k: v.source for k, v in ops.items()}
        self._cached = lru_cache(maxsize=1 << 16)(self._pass_latency)

    def _build(self, spec: OperatorSpec, op: OperatorProfile, source: str) -> _Op:
        kind = spec.kind
        curve, grid = _latency_tables(kind, spec.stage, op)
        pts = op.points
        watts = [(p.x, p.watts) for p in pts if p.watts is not None]
        power = PowerCurve([x for x, _ in watts], [w for _, w in watts]) if watts else None
        if kind is OperatorKind.LM_HEAD:
            collectives, per_token = 1, _ARGMAX_GATHER_BYTES
        else:
            collectives = layer_traversals(self.shape, kind)
            per_token = self.shape.activation_bytes_per_token
        return _Op(spec, curve, grid, power, collectives, per_token, source)

    def _op(self, stage: Stage | str, operator: OperatorKind | str) -> _Op:
        op = self._ops.get((stage, operator))
        if op is None:
            known = ", ".join(f"{s}/{k}" for s, k in self._ops)
            raise InvalidArgument(
                f"{self.shape.name} has no operator {stage}/{operator}; it has: {known}", field="operator"
            )
        return op

    def pass_latency_ms(
        self,
        stage: Stage | str,
        operator: OperatorKind | str,
        batch: int,
        length: int,
        gpus_per_replica: int = 1,
    ) -> float:
        """One pass of ``batch`` sequences through the operator's ALL layers (ms).

        ``length`` is the prompt length in prefill and the KV length (context so far) in decode; only
        attention depends on it, and prefill embedding/attention/ffn process batch × length tokens.
        """
        return self._cached(stage, operator, batch, length, gpus_per_replica)

    def _pass_latency(
        self, stage: Stage | str, operator: OperatorKind | str, batch: int, length: int, tp: int
    ) -> float:
        op = self._op(stage, operator)
        if batch < 1 or length < 1 or tp < 1:
            raise InvalidArgument(
                f"batch ({batch}), length ({length}) and gpus_per_replica ({tp}) must be >= 1", field="batch"
            )
        spec = op.spec
        tokens = tokens_per_pass(spec.stage, spec.kind, batch, length)
        per = 0.0
        if op.grid is not None:
            per = op.grid(batch, length)
        if op.curve is not None:
            per += op.curve(tokens)
        ms = per * spec.layer_traversals
        if tp == 1:
            return ms
        moved = 2 * (tp - 1) / tp * tokens * op.comm_bytes_per_token
        return ms / tp + op.collectives * (self.allreduce_latency_ms + moved * self._link_s_per_byte)

    def operators(self, stage: Stage | str) -> tuple[OperatorSpec, ...]:
        return tuple(op.spec for (s, _), op in self._ops.items() if s == stage)

    def weights_bytes(self, operator: OperatorKind | str) -> int:
        """Weights of one replica of ``operator`` (all its layers), before any tensor-parallel split."""
        return weights_bytes(self.shape, self._op(Stage.DECODE, operator).spec.kind)

    def kv_bytes_per_token(self) -> int:
        """KV cache per token of context, all layers."""
        return self.shape.kv_bytes_per_token

    def replica_memory_bytes(
        self, stage: Stage | str, operator: OperatorKind | str, batch: int, context: int
    ) -> int:
        """Memory one replica needs (all its GPUs together): weights, the KV cache of ``batch``
        sequences of ``context`` tokens for attention, and the activation working set of one pass."""
        spec = self._op(stage, operator).spec
        kv = batch * context * spec.kv_bytes_per_token
        tokens = tokens_per_pass(spec.stage, spec.kind, batch, context)
        return spec.weights_bytes + kv + activation_working_bytes(self.shape, spec.kind, tokens)

    def min_gpus_per_replica(
        self,
        stage: Stage | str,
        operator: OperatorKind | str,
        batch: int,
        context: int,
        usable_fraction: float = USABLE_MEMORY_FRACTION,
    ) -> int:
        """Fewest GPUs whose usable memory holds one replica (weights and KV split evenly across them)."""
        need = self.replica_memory_bytes(stage, operator, batch, context)
        return max(1, math.ceil(need / (self.gpu.memory_bytes * usable_fraction)))

    def busy_watts(self, stage: Stage | str, operator: OperatorKind | str, batch: int, length: int) -> float:
        """Board power of one GPU while it runs this operator at this batch (idle included).

        From the profile's power rows (interpolated in log tokens, clamped); where the profile has none,
        ``DEFAULT_BUSY_FRACTION`` of the way from idle to the board limit.
        """
        op = self._op(stage, operator)
        if op.power is not None:
            return op.power(tokens_per_pass(op.spec.stage, op.spec.kind, batch, length))
        return self.gpu.idle_watts + DEFAULT_BUSY_FRACTION * (self.gpu.max_watts - self.gpu.idle_watts)


@lru_cache(maxsize=64)
def perf_model(shape: ModelShape, gpu: str) -> PerfModel:
    """A shared ``PerfModel`` per (shape, GPU type) from the packaged profiles."""
    return PerfModel(shape, get_gpu(gpu))
