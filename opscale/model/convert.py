"""Conversion of the shared measurement files (../shared/profiles/<gpu>/<model>.json) into our
``opscale.profile/v1`` documents. Pure: the caller reads the files and passes their parsed content,
hash and the conversion date in (``scripts/convert_profiles.py`` does the I/O).

Composition
-----------
The shared files time the pieces of a layer separately. Our operators are composed from them at
matching token counts (tokens = batch × seq_len in prefill, batch in decode)::

    attention = rmsnorm + qkv_proj + attention core + o_proj + rmsnorm
    ffn       = mlp         (dense: gate + up, SiLU, down)
    experts   = mlp         (MoE: every expert's GEMM pair plus the shared expert; the router's small
                             hidden × experts GEMM is not timed and not added)
    embedding, lm_head      as measured

The token-keyed pieces are measured up to 16,384 tokens; prefill attention rows go up to 65,536
(batch 32 × seq_len 2048, …). There the pieces are extrapolated linearly in tokens from their last two
points (the interpolation rule of the profiles' README) and the point is flagged ``extrapolated``.
A composed point's ``watts`` is the time-weighted mean of its pieces' board power,
Σ(ms_i · W_i) / Σ ms_i, and only where every piece had its power measured at that token count.

Error of the composition against the measured whole-layer rows (``layer_prefill`` /
``layer_decode``, dense models only), whole layer / (our attention + ffn) − 1, with our operators
evaluated by ``PerfModel`` exactly as the planner sees them (decode batch 8 is interpolated) — computed
by tests/unit/test_model_profiles.py::test_composition_error_against_whole_layer:

    llama3-8b    prefill  −7.0% … +2.8%    decode  −16.9% …  −3.6%
    llama3-70b   prefill  −5.0% … +7.4%    decode   −2.3% … +13.6%
    qwen2-7b     prefill  −5.9% … +4.3%    decode  −15.1% …  −1.0%

Mostly the sum overestimates: each piece timed alone pays its own launch/latency floor (~18 µs),
which overlaps when the layer is chained in one CUDA graph; so the gap is largest at small decode
batches and vanishes as the GEMMs grow. The whole layer also contains two residual adds that no
piece does, which is one reason it can come out slower; the one large positive gap (llama3-70b decode
at batch 1, +13.6%) we cannot attribute further from these data. The same
−17% … +14% band is what ../shared/profiles/README.md reports for its own sum of pieces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opscale.errors import InvalidArgument
from opscale.model.gpus import get_gpu
from opscale.model.interp import Curve
from opscale.model.profile_schema import FORMAT
from opscale.model.shapes import PRESETS, ModelShape

COMPOSITION = (
    "attention = 2 x rmsnorm + qkv_proj + attention core + o_proj (sum at matching token counts); "
    "ffn/experts = mlp; embedding and lm_head as measured; token-keyed pieces beyond their measured "
    "range are extrapolated linearly in tokens (points flagged 'extrapolated'); watts of a composed "
    "point = time-weighted mean of its pieces, only where all pieces were measured"
)

_TOKEN_OPS = ("embedding", "rmsnorm", "qkv_proj", "o_proj", "mlp", "lm_head")


def shape_from_source_config(config: Mapping[str, Any], name: str) -> ModelShape:
    """The shared files' ``config`` block (d, h, kv, hd, ffn, vocab, layers, experts, topk, shared_ffn)."""
    try:
        return ModelShape(
            name=name,
            layers=config["layers"],
            hidden=config["d"],
            heads=config["h"],
            kv_heads=config["kv"],
            head_dim=config["hd"],
            ffn=config["ffn"],
            vocab=config["vocab"],
            experts=config.get("experts", 0),
            top_k=config.get("topk", 0),
            shared_expert_ffn=config.get("shared_ffn", 0),
        )
    except KeyError as exc:
        raise InvalidArgument(
            f"source profile {name!r}: config lacks {exc.args[0]!r}", field="config"
        ) from None


class _TokenOp:
    """A token-keyed piece: exact rows where measured, the interpolation rules elsewhere."""

    def __init__(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self.name = name
        self.rows = {int(r["tokens"]): (float(r["ms"]), r.get("watts")) for r in rows}
        # Raw (not monotone) so that composed points keep the measured values of their pieces.
        self.curve = Curve(list(self.rows), [ms for ms, _ in self.rows.values()], monotone=False)
        self.max_tokens = max(self.rows)

    def at(self, tokens: int) -> tuple[float, float | None]:
        if tokens in self.rows:
            ms, watts = self.rows[tokens]
            return ms, None if watts is None else float(watts)
        return self.curve(tokens), None


def _token_points(op: _TokenOp) -> list[dict[str, Any]]:
    return [{"x": t, "latency_ms": ms, "watts": w} for t, (ms, w) in sorted(op.rows.items())]


def _attention_point(
    ops: Mapping[str, _TokenOp], row: Mapping[str, Any], *, tokens: int, length_key: str
) -> dict[str, Any]:
    norm_ms, norm_w = ops["rmsnorm"].at(tokens)
    qkv_ms, qkv_w = ops["qkv_proj"].at(tokens)
    o_ms, o_w = ops["o_proj"].at(tokens)
    core_ms, core_w = float(row["ms"]), row.get("watts")
    parts = {"rmsnorm": 2 * norm_ms, "qkv_proj": qkv_ms, "attention_core": core_ms, "o_proj": o_ms}
    total = sum(parts.values())
    # Measured to 10 ns; more digits in a sum or an extrapolation would be noise in the file.
    parts = {k: round(v, 6) for k, v in parts.items()}
    powers = (norm_w, qkv_w, core_w, o_w)
    watts = None
    if all(w is not None for w in powers):
        weights = (2 * norm_ms, qkv_ms, core_ms, o_ms)
        watts = sum(ms * float(w) for ms, w in zip(weights, powers, strict=True) if w is not None) / total
    point: dict[str, Any] = {
        "x": tokens,
        "latency_ms": round(total, 6),
        "watts": None if watts is None else round(watts, 2),
        "batch": int(row["batch"]),
        length_key: int(row[length_key]),
        "parts_ms": parts,
    }
    if any(tokens > ops[n].max_tokens for n in ("rmsnorm", "qkv_proj", "o_proj")):
        point["extrapolated"] = True
    return point


def convert_source(
    src: Mapping[str, Any],
    *,
    source_file: str,
    source_sha256: str,
    converted_on: str,
    converter: str = "scripts/convert_profiles.py",
) -> dict[str, Any]:
    """One shared measurement file → one ``opscale.profile/v1`` document (a JSON-ready dict)."""
    name = str(src["model"])
    shape = shape_from_source_config(src["config"], name)
    preset = PRESETS.get(name)
    if preset is not None and preset != shape:
        raise InvalidArgument(
            f"source profile {name!r}: config differs from our preset {preset}", field="config"
        )
    gpu = get_gpu(str(src["gpu"]))
    raw = src["ops"]
    missing = [n for n in (*_TOKEN_OPS, "attention_prefill", "attention_decode") if n not in raw]
    if missing:
        raise InvalidArgument(f"source profile {name!r}: ops lack {missing}", field="ops")
    ops = {n: _TokenOp(n, raw[n]) for n in _TOKEN_OPS}
    mlp_kind = "experts" if shape.is_moe else "ffn"

    stages: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for stage, core, length_key in (
        ("prefill", "attention_prefill", "seq_len"),
        ("decode", "attention_decode", "kv_len"),
    ):
        attention = [
            _attention_point(
                ops,
                row,
                tokens=int(row["batch"]) * (int(row[length_key]) if stage == "prefill" else 1),
                length_key=length_key,
            )
            for row in sorted(raw[core], key=lambda r: (r[length_key], r["batch"]))
        ]
        stages[stage] = {
            "embedding": _token_points(ops["embedding"]),
            "attention": attention,
            mlp_kind: _token_points(ops["mlp"]),
            "lm_head": _token_points(ops["lm_head"]),
        }

    refs = [
        {"stage": "prefill", "batch": r["batch"], "seq_len": r["seq_len"], "latency_ms": r["ms"]}
        for r in raw.get("layer_prefill", [])
    ] + [
        {"stage": "decode", "batch": r["batch"], "kv_len": r["kv_len"], "latency_ms": r["ms"]}
        for r in raw.get("layer_decode", [])
    ]
    wb = src["weights_bytes"]
    gpu_meta = src.get("gpu_meta")
    return {
        "format": FORMAT,
        "model": name,
        "gpu_type": gpu.key,
        "shape": {
            "name": shape.name, "layers": shape.layers, "hidden": shape.hidden, "heads": shape.heads,
            "kv_heads": shape.kv_heads, "head_dim": shape.head_dim, "ffn": shape.ffn, "vocab": shape.vocab,
            "experts": shape.experts, "top_k": shape.top_k, "shared_expert_ffn": shape.shared_expert_ffn,
            "dtype_bytes": shape.dtype_bytes,
        },
        "weights_bytes_per_layer": {
            "attention": wb["qkv_proj"] + wb["attention"] + wb["o_proj"] + 2 * wb["rmsnorm"],
            mlp_kind: wb["mlp"],
        },
        "weights_bytes_whole": {"embedding": wb["embedding"], "lm_head": wb["lm_head"]},
        "kv_bytes_per_token_per_layer": src["kv_bytes_per_token_per_layer"],
        "activation_bytes_per_token": src["activation_bytes_per_token"],
        "stages": stages,
        "reference_layers": refs,
        "provenance": {
            "source_file": source_file,
            "source_sha256": source_sha256,
            "gpu_name": str(src["gpu"]),
            "torch": str(src.get("torch", "unknown")),
            "dtype": str(src.get("dtype", "bf16")),
            "cuda_graphs": bool(src.get("cuda_graphs", False)),
            "converted_on": converted_on,
            "converter": converter,
            "composition": COMPOSITION,
        },
        "gpu_measured": dict(gpu_meta) if gpu_meta else None,
    }  # fmt: skip
