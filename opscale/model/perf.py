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

    t(n) = t(1) / n + c · AR(n, m)

with c collectives per pass (attention and ffn/experts: one all-reduce of the residual per layer, after
the O projection and after the down projection respectively — two per layer for a whole model; one for
a vocab-parallel embedding; one tiny all-gather of per-shard (max, index) pairs for the lm_head's
argmax) and m the bytes each reduces (tokens × hidden × dtype bytes; 8 B per token for the lm_head).
AR(n, m) is *measured*, not assumed: the latency of vLLM's custom all-reduce on 8×H100 NVLink for
messages of 512 B to 1 MiB at n = 2, 4, 8 (the "vllm" rows of the table in SGLang pull request #2904,
"optimize custom allreduce kernel", 2025-01), interpolated log-log in m; above 1 MiB, the 1 MiB figure
plus the ring's 2·(n−1)/n · Δm bytes at the GPU's one-direction link bandwidth (datasheet NVLink or
PCIe figure, which counts both directions, halved). A decode all-reduce at TP 4 and batch 32 on a 70B
model (512 KiB) costs ~27 µs, so 160 of them add ~4 ms to a ~15 ms step. Cards without NVLink use the
same small-message latency with their PCIe bandwidth. The ideal split ignores the latency floor of tiny
kernels, so TP still looks slightly better than it is at batch 1.

Mixture of experts. The profiles run every expert at every token count (``../shared/profiles`` README),
but a router sends T tokens to top-k of E experts, and a batch touches E·(1 − (1 − k/E)^T) distinct
experts in expectation (uniform routing). Small decode batches read only those experts' weights, so the
experts pass is scaled by the roofline time of the work actually done over the roofline time of the work
profiled (``moe_activation_factor``): qwen2-57b-a14b at 1 token reads 8 of its 64 experts, ~0.2× of the
profiled pass; at batch 64 it reads ~all of them and the factor is ~1. The planner and the simulator price
the same pass, so both see it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from opscale.errors import InvalidArgument
from opscale.model.estimate import estimated_profiles, is_estimated
from opscale.model.gpus import GpuSpec, get_gpu
from opscale.model.interp import Curve, Grid, PowerCurve
from opscale.model.operators import (
    OperatorKind,
    OperatorSpec,
    Stage,
    layer_traversals,
    operator_kinds,
    operators_for,
    tokens_per_pass,
    weights_bytes,
)
from opscale.model.profiles import ModelProfile, OperatorProfile, packaged_profiles
from opscale.model.roofline import scale_operator
from opscale.model.shapes import ModelShape
from opscale.model.sharing import shared_pass_ms

# vLLM's custom all-reduce on H100 NVLink, µs by message bytes and TP degree (SGLang PR #2904, "vllm"
# rows, measured without CUDA graphs): the collective cost of tensor parallelism.
_AR_BYTES = (512.0, 4096.0, 32768.0, 262144.0, 524288.0, 1048576.0)
_AR_US: Mapping[int, tuple[float, ...]] = {
    2: (9.5, 8.8, 8.7, 12.9, 17.7, 26.6),
    4: (9.1, 8.5, 9.2, 20.6, 26.9, 40.2),
    8: (10.1, 9.3, 11.8, 24.1, 30.4, 45.0),
}
# Share of (limit − idle) an operator draws while busy when its profile has no power rows: the median of
# (W − idle) / (limit − idle) over the 115 rows with watts in ../shared/profiles/h100 (0.846).
DEFAULT_BUSY_FRACTION = 0.85
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
    # Prefer a measurement to an estimate, then this GPU type (no scaling), then our own model's file,
    # then a measured card (not derived).
    matches.sort(
        key=lambda p: (
            is_estimated(p),
            p.gpu_type != gpu.key,
            p.model != shape.name,
            p.provenance.derived is not None,
        )
    )
    best = matches[0]
    op = best.operator(stage, kind)
    if is_estimated(best):
        how = best.provenance.derived
        if best.gpu_type == gpu.key:
            return op, str(how)
        src = get_gpu(best.gpu_type)
        return scale_operator(op, best.shape, src, gpu), f"{how}, then roofline {src.key} -> {gpu.key}"
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


def allreduce_ms(gpu: GpuSpec, tp: int, nbytes: float) -> float:
    """One all-reduce of ``nbytes`` over ``tp`` GPUs (see the module docstring)."""
    if tp <= 1 or nbytes <= 0:
        return 0.0
    row = _AR_US[min(8, 1 << (tp - 1).bit_length())]
    per_byte_ms = 2 * (tp - 1) / tp * 1e3 / (gpu.link_bytes_s / 2)
    if nbytes >= _AR_BYTES[-1]:
        return row[-1] / 1e3 + (nbytes - _AR_BYTES[-1]) * per_byte_ms
    if nbytes <= _AR_BYTES[0]:
        return row[0] / 1e3
    i = bisect.bisect_right(_AR_BYTES, nbytes) - 1
    x0, x1 = math.log(_AR_BYTES[i]), math.log(_AR_BYTES[i + 1])
    y0, y1 = math.log(row[i]), math.log(row[i + 1])
    return math.exp(y0 + (y1 - y0) * (math.log(nbytes) - x0) / (x1 - x0)) / 1e3


def moe_activation_factor(shape: ModelShape, tokens: int, gpu: GpuSpec) -> float:
    """Roofline time of an experts pass over ``tokens`` tokens as routing does it (top-k of E experts,
    E·(1 − (1 − k/E)^T) of them touched) over the profiled pass (every expert, ⌈T·k/E⌉ tokens each,
    taken as max(1, T·k/E) so the factor is monotone in T)."""
    if not shape.is_moe:
        return 1.0
    e, k, f, d, b = shape.experts, shape.top_k, shape.ffn, shape.hidden, shape.dtype_bytes
    t = float(tokens)
    touched = e * (1.0 - (1.0 - k / e) ** t)
    per_expert = max(1.0, t * k / e)

    def rt(flops: float, nbytes: float) -> float:
        return max(flops / gpu.bf16_flops, nbytes / gpu.memory_bytes_s)

    fs = shape.shared_expert_ffn
    shared = rt(6 * t * fs * d, (3 * d * fs + 2 * t * d) * b) if fs else 0.0
    actual = shared + rt(6 * t * k * f * d, (3 * d * f * touched + 2 * t * k * d) * b)
    profiled = shared + rt(6 * e * per_expert * f * d, (3 * d * f * e + 2 * e * per_expert * d) * b)
    return min(1.0, actual / profiled)


class PerfModel:
    """Latency and power of one model's operators on one GPU type."""

    __slots__ = ("_cached", "_ops", "estimated", "gpu", "shape", "sources")

    def __init__(
        self,
        shape: ModelShape,
        gpu: str | GpuSpec,
        *,
        profiles: Sequence[ModelProfile] | None = None,
    ) -> None:
        self.shape = shape
        self.gpu = gpu if isinstance(gpu, GpuSpec) else get_gpu(gpu)
        available = packaged_profiles() + estimated_profiles() if profiles is None else tuple(profiles)
        ops: dict[tuple[str, str], _Op] = {}
        for stage in Stage:
            for spec in operators_for(shape, stage):
                op, source = find_operator_profile(shape, stage, spec.kind, self.gpu, available)
                ops[(stage, spec.kind)] = self._build(spec, op, source)
        # Keyed by (str, str): Stage and OperatorKind are StrEnums, so plain strings find the same entries.
        self._ops: Mapping[tuple[str, str], _Op] = ops
        self.sources: Mapping[tuple[str, str], str] = {k: v.source for k, v in ops.items()}
        # True when some operator is priced from an estimated profile (opscale.model.estimate).
        self.estimated = any(v.source.startswith("estimated") for v in ops.values())
        self._cached = lru_cache(maxsize=1 << 17)(self._pass_latency)

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
        gpus_per_replica: float = 1,
        core_length: int | None = None,
    ) -> float:
        """One pass of ``batch`` sequences through the operator's ALL layers (ms).

        ``length`` is the prompt length in prefill and the KV length (context so far) in decode; only
        attention depends on it, and prefill embedding/attention/ffn process batch × length tokens.
        ``gpus_per_replica`` below 1 is a share of one GPU, priced by ``opscale.model.sharing``.
        ``core_length`` (prefill attention): the length the causal core is priced at when the prompts
        of a pass differ — their root mean square, since the core's work is Σ L² (default ``length``).
        """
        if 0.0 < gpus_per_replica < 1.0:  # a share of one GPU (opscale.model.sharing)
            whole = self._cached(stage, operator, batch, length, 1, core_length or length)
            return shared_pass_ms(whole, gpus_per_replica)
        if gpus_per_replica != int(gpus_per_replica):
            raise InvalidArgument(
                f"gpus_per_replica must be a whole count or a share in (0, 1), got {gpus_per_replica}",
                field="gpus_per_replica",
            )
        return self._cached(stage, operator, batch, length, int(gpus_per_replica), core_length or length)

    def _pass_latency(
        self, stage: Stage | str, operator: OperatorKind | str, batch: int, length: int, tp: int, core: int
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
            # Split prefill attention: the grid is the causal core alone, priced at ``core``; a decode
            # grid is the whole operator (its KV reads are linear in length, so the mean is exact).
            per = op.grid(batch, core if op.curve is not None else length)
        if op.curve is not None:
            per += op.curve(tokens)
        if spec.kind is OperatorKind.EXPERTS:
            per *= moe_activation_factor(self.shape, tokens, self.gpu)
        ms = per * spec.layer_traversals
        if tp == 1:
            return ms
        return ms / tp + op.collectives * allreduce_ms(self.gpu, tp, tokens * op.comm_bytes_per_token)

    def operators(self, stage: Stage | str) -> tuple[OperatorSpec, ...]:
        return tuple(op.spec for (s, _), op in self._ops.items() if s == stage)

    def weights_bytes(self, operator: OperatorKind | str) -> int:
        """Weights of one replica of ``operator`` (all its layers), before any tensor-parallel split."""
        return weights_bytes(self.shape, self._op(Stage.DECODE, operator).spec.kind)

    def kv_bytes_per_token(self) -> int:
        """KV cache per token of context, all layers."""
        return self.shape.kv_bytes_per_token

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
