"""Model shapes: presets, HuggingFace config parsing and its errors."""

from __future__ import annotations

from typing import Any

import pytest

from opscale.errors import InvalidArgument
from opscale.model.profiles import packaged_profiles
from opscale.model.shapes import PRESETS, ModelShape, get_preset, shape_from_hf_config

# Abbreviated from meta-llama/Meta-Llama-3-8B/config.json.
LLAMA_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "torch_dtype": "bfloat16",
}

# Abbreviated from mistralai/Mixtral-8x7B-v0.1/config.json.
MIXTRAL_CONFIG: dict[str, Any] = {
    "architectures": ["MixtralForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "vocab_size": 32000,
}

# Abbreviated from Qwen/Qwen2-57B-A14B/config.json.
QWEN_MOE_CONFIG: dict[str, Any] = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "moe_intermediate_size": 2560,
    "shared_expert_intermediate_size": 20480,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "num_experts": 64,
    "num_experts_per_tok": 8,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "vocab_size": 151936,
}


def test_llama_config_matches_preset() -> None:
    # head_dim is absent, so it is derived: 4096 / 32 = 128.
    assert shape_from_hf_config(LLAMA_CONFIG, "llama3-8b") == get_preset("llama3-8b")


def test_mixtral_config_matches_preset() -> None:
    shape = shape_from_hf_config(MIXTRAL_CONFIG, "mixtral-8x7b")
    assert shape == get_preset("mixtral-8x7b")
    assert shape.is_moe and shape.ffn == 14336 and shape.shared_expert_ffn == 0


def test_qwen_moe_config_uses_moe_and_shared_sizes() -> None:
    shape = shape_from_hf_config(QWEN_MOE_CONFIG, "qwen2-57b-a14b")
    assert shape == get_preset("qwen2-57b-a14b")


def test_explicit_head_dim_and_mha_default() -> None:
    config = {**LLAMA_CONFIG, "head_dim": 256}
    del config["num_key_value_heads"]
    shape = shape_from_hf_config(config, "x")
    # No num_key_value_heads: plain multi-head attention, kv_heads = heads.
    assert (shape.head_dim, shape.kv_heads) == (256, 32)


def test_text_config_is_unwrapped() -> None:
    shape = shape_from_hf_config({"model_type": "llava", "text_config": LLAMA_CONFIG}, "llava")
    assert shape.hidden == 4096


@pytest.mark.parametrize(
    "key",
    ["hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size"],
)
def test_missing_key_is_named(key: str) -> None:
    config = dict(LLAMA_CONFIG)
    del config[key]
    with pytest.raises(InvalidArgument, match=key) as info:
        shape_from_hf_config(config, "x")
    assert info.value.field == key


def test_moe_without_top_k_is_named() -> None:
    config = dict(MIXTRAL_CONFIG)
    del config["num_experts_per_tok"]
    with pytest.raises(InvalidArgument, match="num_experts_per_tok"):
        shape_from_hf_config(config, "x")


@pytest.mark.parametrize("value", [0, -1, "4096", 4096.0, True, None])
def test_invalid_value_is_named(value: object) -> None:
    with pytest.raises(InvalidArgument, match="hidden_size"):
        shape_from_hf_config({**LLAMA_CONFIG, "hidden_size": value}, "x")


def test_underivable_head_dim() -> None:
    with pytest.raises(InvalidArgument, match="head_dim"):
        shape_from_hf_config({**LLAMA_CONFIG, "hidden_size": 4000, "num_attention_heads": 48}, "x")


def test_mixed_dense_moe_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="mlp_only_layers"):
        shape_from_hf_config({**QWEN_MOE_CONFIG, "mlp_only_layers": [0, 1]}, "x")


def test_not_a_mapping() -> None:
    with pytest.raises(InvalidArgument, match="JSON object"):
        shape_from_hf_config([1, 2], "x")  # type: ignore[arg-type]


def test_unknown_preset_lists_known_names() -> None:
    with pytest.raises(InvalidArgument) as info:
        get_preset("gpt-5")
    for name in PRESETS:
        assert name in str(info.value)


def test_preset_lookup_is_case_insensitive() -> None:
    assert get_preset(" Llama3-8B ") is PRESETS["llama3-8b"]


def test_presets_equal_packaged_profile_shapes() -> None:
    # The profiles' `config` blocks are where the presets come from; they must not drift apart.
    shapes = {p.model: p.shape for p in packaged_profiles()}
    assert set(shapes) == set(PRESETS)
    for name, shape in shapes.items():
        assert PRESETS[name] == shape


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("layers", {"layers": 0}),
        ("kv_heads", {"kv_heads": 5}),  # 32 heads are not a multiple of 5 KV heads
        ("top_k", {"experts": 8, "top_k": 9}),
        ("experts", {"top_k": 2}),
        ("name", {"name": ""}),
    ],
)
def test_shape_validation(field: str, changes: dict[str, Any]) -> None:
    base = get_preset("llama3-8b")
    fields = {f: getattr(base, f) for f in ModelShape.__dataclass_fields__}
    with pytest.raises(InvalidArgument) as info:
        ModelShape(**{**fields, **changes})
    assert info.value.field == field
