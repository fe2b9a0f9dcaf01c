"""The on-disk profile format, ``opscale.profile/v1``: one JSON file per (model, GPU type).

Written by ``scripts/convert_profiles.py`` (from ../shared/profiles) and meant to be written the same
way by our own profiler. Validated here with pydantic; ``opscale.model.profiles`` turns a validated
file into frozen values.

Layout::

    {
      "format": "opscale.profile/v1",
      "model": "llama3-8b", "gpu_type": "h100",
      "shape": {name, layers, hidden, heads, kv_heads, head_dim, ffn, vocab, experts, top_k,
                shared_expert_ffn, dtype_bytes},
      "weights_bytes_per_layer": {"attention": …, "ffn" | "experts": …},
      "weights_bytes_whole": {"embedding": …, "lm_head": …},
      "kv_bytes_per_token_per_layer": …, "activation_bytes_per_token": …,
      "stages": {"prefill" | "decode": {operator kind: [point, …]}},
      "reference_layers": [{stage, batch, seq_len | kv_len, latency_ms}],   # whole-layer checks
      "provenance": {...}, "gpu_measured": {...} | null
    }

A point is ``{x, latency_ms, watts}`` with ``x`` = tokens in the batch, ONE layer for attention and
ffn/experts, the whole operator for embedding and lm_head. Attention points also carry their two
dimensions: ``batch`` and ``seq_len`` in prefill (x = batch × seq_len), ``batch`` and ``kv_len`` in
decode (x = batch), and ``parts_ms``, the measured pieces they are the sum of.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT = "opscale.profile/v1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PointDoc(_Strict):
    x: float = Field(gt=0)
    latency_ms: float = Field(gt=0)
    watts: float | None = Field(default=None, gt=0)
    batch: int | None = Field(default=None, ge=1)
    seq_len: int | None = Field(default=None, ge=1)
    kv_len: int | None = Field(default=None, ge=1)
    parts_ms: dict[str, float] | None = None
    # True when some part was extrapolated beyond its measured range to compose this point.
    extrapolated: bool = False


class ShapeDoc(_Strict):
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    experts: int = 0
    top_k: int = 0
    shared_expert_ffn: int = 0
    dtype_bytes: int = 2


class ReferenceLayerDoc(_Strict):
    stage: Literal["prefill", "decode"]
    batch: int = Field(ge=1)
    seq_len: int | None = Field(default=None, ge=1)
    kv_len: int | None = Field(default=None, ge=1)
    latency_ms: float = Field(gt=0)


class ProvenanceDoc(_Strict):
    source_file: str
    source_sha256: str
    gpu_name: str
    torch: str
    dtype: str
    cuda_graphs: bool
    converted_on: str
    converter: str
    composition: str


class GpuMeasuredDoc(_Strict):
    gpu: str
    idle_watts: float
    power_limit_watts: float
    memory_total_bytes: int
    copy_GBps_read_plus_write: float
    bf16_matmul_TFLOPs: float
    bf16_matmul_watts: float


Kind = Literal["embedding", "attention", "ffn", "experts", "lm_head"]


class ProfileDoc(_Strict):
    format: Literal["opscale.profile/v1"]
    model: str
    gpu_type: str
    shape: ShapeDoc
    weights_bytes_per_layer: dict[Kind, int]
    weights_bytes_whole: dict[Kind, int]
    kv_bytes_per_token_per_layer: int = Field(gt=0)
    activation_bytes_per_token: int = Field(gt=0)
    stages: dict[Literal["prefill", "decode"], dict[Kind, list[PointDoc]]]
    reference_layers: list[ReferenceLayerDoc] = []
    provenance: ProvenanceDoc
    gpu_measured: GpuMeasuredDoc | None = None

    @model_validator(mode="after")
    def _attention_points_have_their_dimensions(self) -> ProfileDoc:
        for stage, ops in self.stages.items():
            length = "seq_len" if stage == "prefill" else "kv_len"
            for i, p in enumerate(ops.get("attention", [])):
                where = f"stages.{stage}.attention[{i}]"
                n = getattr(p, length)
                if p.batch is None or n is None:
                    raise ValueError(f"{where}: attention points need batch and {length}")
                tokens = p.batch * n if stage == "prefill" else p.batch
                if p.x != tokens:
                    raise ValueError(f"{where}: x must be {tokens} (tokens in the batch), got {p.x}")
            for kind, points in ops.items():
                if not points:
                    raise ValueError(f"stages.{stage}.{kind}: needs at least one point")
        return self
