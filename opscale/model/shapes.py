"""Model shapes: the handful of numbers that decide every operator's work and memory.

A shape comes from a built-in preset (``get_preset``) or from a HuggingFace ``config.json``
(``shape_from_hf_config``). Everything else in ``opscale.model`` (weights, KV and activation bytes,
FLOPs, which profile applies) is derived from these fields, so they are validated once, here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opscale.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class ModelShape:
    """A decoder-only transformer, as the performance model sees it.

    ``ffn`` is the dense MLP's intermediate size, or for a mixture-of-experts model the intermediate
    size of ONE routed expert. ``shared_expert_ffn`` is the intermediate size of an always-on shared
    expert (0 when the model has none, as in Mixtral).
    """

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
    dtype_bytes: int = 2  # bf16

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidArgument("model shape: name must not be empty", field="name")
        for field in ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn", "vocab", "dtype_bytes"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InvalidArgument(
                    f"model shape {self.name!r}: {field} must be a positive integer, got {value!r}",
                    field=field,
                )
        for field in ("experts", "top_k", "shared_expert_ffn"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(
                    f"model shape {self.name!r}: {field} must be an integer >= 0, got {value!r}", field=field
                )
        if self.heads % self.kv_heads:
            raise InvalidArgument(
                f"model shape {self.name!r}: heads ({self.heads}) must be a multiple of kv_heads "
                f"({self.kv_heads}) for grouped-query attention",
                field="kv_heads",
            )
        if self.experts == 0 and (self.top_k or self.shared_expert_ffn):
            raise InvalidArgument(
                f"model shape {self.name!r}: top_k and shared_expert_ffn need experts > 0", field="experts"
            )
        if self.experts and not 1 <= self.top_k <= self.experts:
            raise InvalidArgument(
                f"model shape {self.name!r}: top_k must be in [1, experts={self.experts}], got {self.top_k}",
                field="top_k",
            )

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def kv_bytes_per_token_per_layer(self) -> int:
        # One K and one V vector per KV head: 2 × kv_heads × head_dim elements of dtype_bytes each.
        # llama3-8b: 2 × 8 × 128 × 2 B = 4096 B, the profiles' `kv_bytes_per_token_per_layer`.
        return 2 * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return self.kv_bytes_per_token_per_layer * self.layers

    @property
    def activation_bytes_per_token(self) -> int:
        # The residual stream: one hidden vector per token crosses every operator boundary.
        return self.hidden * self.dtype_bytes


# Shapes from the `config` blocks of ../shared/profiles/h100/*.json; layer counts and vocabularies are
# the released models' (Meta Llama 3 8B/70B, Mixtral 8x7B v0.1, Qwen2 7B, Qwen2 57B-A14B).
PRESETS: Mapping[str, ModelShape] = {
    s.name: s
    for s in (
        ModelShape("llama3-8b", layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, ffn=14336,
                   vocab=128256),
        ModelShape("llama3-70b", layers=80, hidden=8192, heads=64, kv_heads=8, head_dim=128, ffn=28672,
                   vocab=128256),
        ModelShape("mixtral-8x7b", layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, ffn=14336,
                   vocab=32000, experts=8, top_k=2),
        ModelShape("qwen2-7b", layers=28, hidden=3584, heads=28, kv_heads=4, head_dim=128, ffn=18944,
                   vocab=152064),
        ModelShape("qwen2-57b-a14b", layers=28, hidden=3584, heads=28, kv_heads=4, head_dim=128, ffn=2560,
                   vocab=151936, experts=64, top_k=8, shared_expert_ffn=20480),
    )
}  # fmt: skip


# Presets never profiled on a GPU: their operators are estimated (``opscale.model.estimate``) and every
# result that uses them says so. Mixtral-8x22B: the `config.json` of its model card
# (mistralai/Mixtral-8x22B-v0.1 on Hugging Face: hidden_size 6144, num_hidden_layers 56,
# num_attention_heads 48, num_key_value_heads 8, intermediate_size 16384, num_local_experts 8,
# num_experts_per_tok 2, vocab_size 32768; "141B parameters, 39B active"). Check: per layer
# attention 6144·(6144 + 2·1024) + 6144² = 88.1M and experts 8·3·6144·16384 = 2,416M, × 56 layers,
# + 2 · 32768 · 6144 embedding/lm_head = 140.6B parameters.
ESTIMATED: Mapping[str, ModelShape] = {
    s.name: s
    for s in (
        ModelShape("mixtral-8x22b", layers=56, hidden=6144, heads=48, kv_heads=8, head_dim=128, ffn=16384,
                   vocab=32768, experts=8, top_k=2),
    )
}  # fmt: skip


def get_preset(name: str) -> ModelShape:
    """The built-in shape called ``name`` (case-insensitive): a profiled preset or an estimated one."""
    key = name.strip().lower()
    shape = PRESETS.get(key) or ESTIMATED.get(key)
    if shape is None:
        known = ", ".join(sorted([*PRESETS, *ESTIMATED]))
        raise InvalidArgument(f"unknown model preset {name!r}; known presets: {known}", field="model")
    return shape


def _int_key(config: Mapping[str, Any], key: str, *, minimum: int = 1) -> int:
    if key not in config:
        raise InvalidArgument(f"HuggingFace config: missing required key {key!r}", field=key)
    return _check_int(config[key], key, minimum)


def _check_int(value: Any, key: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidArgument(
            f"HuggingFace config: {key!r} must be an integer >= {minimum}, got {value!r}", field=key
        )
    return value


def _optional_int(config: Mapping[str, Any], *keys: str, minimum: int = 0) -> int | None:
    """The first of ``keys`` that is present and not null (HF configs spell the same thing several ways)."""
    for key in keys:
        if config.get(key) is not None:
            return _check_int(config[key], key, minimum)
    return None


def shape_from_hf_config(config: Mapping[str, Any], name: str, *, dtype_bytes: int = 2) -> ModelShape:
    """Read a HuggingFace ``config.json`` (already parsed) into a shape.

    Dense (Llama, Qwen2, Mistral) and MoE (Mixtral ``num_local_experts``; Qwen2-MoE ``num_experts`` +
    ``moe_intermediate_size`` + ``shared_expert_intermediate_size``; DeepSeek-style ``n_routed_experts``
    + ``n_shared_experts``) configs are understood. Multimodal configs that nest the language model in
    ``text_config`` are unwrapped. ``dtype_bytes`` is the serving precision, not ``torch_dtype``: the
    checkpoint's storage type says nothing about how it is served, and our profiles are bf16.
    """
    if not isinstance(config, Mapping):
        raise InvalidArgument("HuggingFace config must be a JSON object", field="config")
    if "hidden_size" not in config and isinstance(config.get("text_config"), Mapping):
        config = config["text_config"]
    hidden = _int_key(config, "hidden_size")
    layers = _int_key(config, "num_hidden_layers")
    heads = _int_key(config, "num_attention_heads")
    vocab = _int_key(config, "vocab_size")
    # Without num_key_value_heads the model is plain multi-head attention (HF's own default).
    kv_heads = _optional_int(config, "num_key_value_heads", minimum=1) or heads
    head_dim = _optional_int(config, "head_dim", minimum=1)
    if head_dim is None:
        if hidden % heads:
            raise InvalidArgument(
                f"HuggingFace config: no 'head_dim', and hidden_size ({hidden}) is not a multiple of "
                f"num_attention_heads ({heads}) to derive it",
                field="head_dim",
            )
        head_dim = hidden // heads

    experts = _optional_int(config, "num_local_experts", "num_experts", "n_routed_experts") or 0
    top_k = 0
    shared = 0
    if experts:
        top_k = _int_key(config, "num_experts_per_tok")
        ffn = _optional_int(config, "moe_intermediate_size", minimum=1) or _int_key(
            config, "intermediate_size"
        )
        shared = _optional_int(config, "shared_expert_intermediate_size") or 0
        n_shared = _optional_int(config, "n_shared_experts") or 0
        if not shared and n_shared:
            shared = n_shared * ffn
        mixed = config.get("mlp_only_layers") or config.get("first_k_dense_replace")
        if mixed or (config.get("decoder_sparse_step") or 1) != 1:
            raise InvalidArgument(
                "HuggingFace config: models that mix dense and MoE layers (mlp_only_layers, "
                "first_k_dense_replace, decoder_sparse_step != 1) are not modelled",
                field="mlp_only_layers",
            )
    else:
        ffn = _int_key(config, "intermediate_size")
    return ModelShape(
        name=name,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        ffn=ffn,
        vocab=vocab,
        experts=experts,
        top_k=top_k,
        shared_expert_ffn=shared,
        dtype_bytes=dtype_bytes,
    )
